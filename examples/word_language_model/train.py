"""Train the small word-level LSTM shipped as models/shakespeare-words (minutes on a CPU).

    python examples/word_language_model/train.py --data ../shared/data/tinyshakespeare.txt --out runs/words

Words are read the way the served model's vocabulary reads them (service/core/vocab_words.py:
lowercased, words and punctuation marks, one ``<eos>`` per newline), so the served text
input gives the model the tokens it was trained on. The vocabulary is the training
split's words seen at least --min-count times, plus ``<unk>`` (id 0) and ``<eos>`` (id 1).
Validation is the last 10% of the text, from a line start: the split
``lstm_service.export torch --data`` measures again through onnxruntime.

Writes vocab.txt, kwargs.json and model.pt (the best state_dict by validation loss):
the three files ``python -m lstm_service.export torch`` takes, with model.py:RNNModel.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import RNNModel  # noqa: E402

from lstm_service.service.core.vocab_words import WordsVocab, split_words  # noqa: E402

SPLIT, LOWERCASE = "punctuation", True


def split_text(text: str):
    cut = text.find("\n", int(len(text) * 0.9))
    return text[:cut + 1], text[cut + 1:]


def build_vocab(train: str, min_count: int) -> WordsVocab:
    counts = Counter(w for line in train.split("\n") for w in split_words(line, SPLIT, LOWERCASE))
    words = ["<unk>", "<eos>"] + sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: -counts[w])
    return WordsVocab(words, unk="<unk>", eos="<eos>", lowercase=LOWERCASE, split=SPLIT)


def batchify(ids: torch.Tensor, batch: int) -> torch.Tensor:
    per = ids.numel() // batch
    return ids[: per * batch].view(batch, per).t().contiguous()  # [N, B]: sequence-first, as the example


def repackage(hidden):
    return hidden.detach() if isinstance(hidden, torch.Tensor) else tuple(repackage(h) for h in hidden)


@torch.no_grad()
def evaluate(model: RNNModel, data: torch.Tensor, bptt: int) -> float:
    model.eval()
    hidden, total, count = model.init_hidden(data.size(1)), 0.0, 0
    for i in range(0, data.size(0) - 1, bptt):
        n = min(bptt, data.size(0) - 1 - i)
        out, hidden = model(data[i:i + n], hidden)
        total += nn.functional.nll_loss(out, data[i + 1:i + 1 + n].reshape(-1), reduction="sum").item()
        count += n * data.size(1)
    return total / count


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--min-count", type=int, default=4)
    p.add_argument("--size", type=int, default=128, help="embedding and hidden size (tied weights)")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--decay", type=float, default=0.75, help="learning rate factor after each epoch")
    p.add_argument("--minutes", type=float, default=9.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1111)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    train_text, valid_text = split_text(args.data.read_text(encoding="utf-8"))
    vocab = build_vocab(train_text, args.min_count)
    train = batchify(torch.tensor(vocab.ids_of_text(train_text, "train"), dtype=torch.long), args.batch_size)
    valid = batchify(torch.tensor(vocab.ids_of_text(valid_text, "valid"), dtype=torch.long), 8)
    kwargs = dict(rnn_type="LSTM", ntoken=vocab.size, ninp=args.size, nhid=args.size, nlayers=args.layers,
                  dropout=args.dropout, tie_weights=True)
    model = RNNModel(**kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.txt").write_text("\n".join(vocab.words) + "\n", encoding="utf-8")
    (args.out / "kwargs.json").write_text(json.dumps(kwargs, indent=2) + "\n")
    print(f"vocabulary {vocab.size} words; {train.numel()} training tokens, {valid.numel()} validation", flush=True)
    started, best, epoch, history = time.monotonic(), math.inf, 0, []
    while time.monotonic() - started < args.minutes * 60:
        epoch += 1
        model.train()
        hidden = model.init_hidden(args.batch_size)
        for i in range(0, train.size(0) - 1, args.bptt):
            n = min(args.bptt, train.size(0) - 1 - i)
            hidden = repackage(hidden)  # truncated BPTT: carry the state, not its history
            out, hidden = model(train[i:i + n], hidden)
            loss = nn.functional.nll_loss(out, train[i + 1:i + 1 + n].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
            if time.monotonic() - started > args.minutes * 60:
                break
        val = evaluate(model, valid, args.bptt)
        minutes = (time.monotonic() - started) / 60
        history.append({"epoch": epoch, "validation_loss": round(val, 4), "minutes": round(minutes, 2)})
        print(f"epoch {epoch}: validation {val:.4f} nats/word (perplexity {math.exp(val):.1f}), {minutes:.1f} min",
              flush=True)
        if val < best:
            best = val
            torch.save(model.state_dict(), args.out / "model.pt")
        for group in optimizer.param_groups:
            group["lr"] *= args.decay  # a short run: decay each epoch
    (args.out / "history.json").write_text(json.dumps({"best_validation_loss": round(best, 4), "epochs": history,
                                                       "args": {k: str(v) for k, v in vars(args).items()}},
                                                      indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
