"""Train a byte-level recurrent language model with truncated BPTT.

    python -m lstm_service.model.train --data ../shared/data/tinyshakespeare.txt --out runs/lstm

The hidden (and cell) state is carried from one chunk to the next and
detached between them, so gradients flow through ``--seq-len`` steps while
the state sees the whole text. The best checkpoint by validation loss is
kept in --out; --resume continues from --out's last state.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import CheckpointError, load_metrics, save_model
from .config import CELL_KINDS, ModelConfig
from .data import DataError, batchify, chunks, load_split
from .evaluate import bits_per_byte, validation_loss
from .lm import LanguageModel


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lstm_service.model.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="UTF-8 text file; last 10%% is validation")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory")
    p.add_argument("--cell", choices=CELL_KINDS, default="lstm")
    p.add_argument("--embed", type=int, default=64, help="embedding size (default 64)")
    p.add_argument("--hidden", type=int, default=512, help="hidden units per layer (default 512)")
    p.add_argument("--layers", type=int, default=2, help="recurrent layers (default 2)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout between layers (default 0.1)")
    p.add_argument("--batch-size", type=int, default=64, help="parallel text streams (default 64)")
    p.add_argument("--seq-len", type=int, default=128, help="BPTT length (default 128)")
    p.add_argument("--epochs", type=float, default=10, help="passes over the training text")
    p.add_argument("--time-limit", type=float, default=0, help="stop after this many minutes (0: none)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    p.add_argument("--eval-every", type=int, default=500, help="steps between validations")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="continue from --out's last state")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return p.parse_args(argv)


def learning_rate(args, step: int, progress: float) -> float:
    """Peak LR after a linear warm-up, decayed by ``progress`` (0..1) through training."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.schedule == "cosine":
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
    if args.schedule == "step":
        return args.lr * (0.1 ** int(progress * 3))  # /10 at 1/3 and 2/3 of training
    return args.lr


def train(args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = load_split(args.data)
    rows = batchify(split.train, args.batch_size)
    steps_per_epoch = math.ceil((rows.shape[1] - 1) / args.seq_len)
    total_steps = max(1, int(args.epochs * steps_per_epoch))

    config = ModelConfig(cell=args.cell, embed_size=args.embed, hidden_size=args.hidden,
                         layers=args.layers, dropout=args.dropout)
    model = LanguageModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, best = 0, load_metrics(args.out).get("validation_loss", math.inf) if args.resume else math.inf
    trainer_path = args.out / "trainer.pt"
    if args.resume:
        if not trainer_path.is_file():
            raise CheckpointError(f"--resume: {trainer_path} does not exist")
        state = torch.load(trainer_path, map_location="cpu", weights_only=True)
        config = ModelConfig.from_dict(json.loads(state["config"]))
        model = LanguageModel(config)
        model.load_state_dict(state["model"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])

    params = sum(p.numel() for p in model.parameters())
    print(f"model: {config.cell} {config.layers}x{config.hidden_size}, {params/1e6:.2f}M parameters; "
          f"{split.train.size} train / {split.validation.size} validation bytes; "
          f"{total_steps} steps of {args.batch_size}x{args.seq_len}", flush=True)
    start = time.monotonic()
    deadline = start + args.time_limit * 60 if args.time_limit else math.inf
    tokens_seen = 0
    metrics = {}
    bar = tqdm(total=total_steps, initial=step, disable=args.no_progress, unit="step", dynamic_ncols=True)
    model.train()
    while step < total_steps and time.monotonic() < deadline:
        # A random shift per epoch so chunk boundaries differ between passes.
        shift = int(rng.integers(0, args.seq_len))
        h, c = model.initial_state(args.batch_size)
        for inputs, targets in chunks(rows[:, shift:], args.seq_len):
            if step >= total_steps or time.monotonic() >= deadline:
                break
            # With --time-limit the schedule anneals to whichever ends first, the
            # steps or the clock, so a time-boxed run still finishes its decay.
            progress = step / total_steps
            if args.time_limit:
                progress = max(progress, (time.monotonic() - start) / (args.time_limit * 60))
            lr = learning_rate(args, step, min(1.0, progress))
            for group in optimizer.param_groups:
                group["lr"] = lr
            h, c = h.detach(), c.detach()  # truncate BPTT at the chunk boundary
            logits, h, c = model(torch.from_numpy(inputs), h, c)
            loss = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(targets).flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            step += 1
            tokens_seen += inputs.size
            tok_s = tokens_seen / (time.monotonic() - start)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.1e}")
            if step % args.eval_every == 0 or step == total_steps:
                metrics = _validate(args, model, optimizer, split, step, best, tok_s, start)
                best = metrics["best_validation_loss"]
                bar.write(f"step {step}: validation {metrics['step_validation_loss']:.4f} nats/byte "
                          f"({bits_per_byte(metrics['step_validation_loss']):.3f} bits), best {best:.4f}")
    bar.close()
    if not metrics or metrics["step"] != step:
        tok_s = tokens_seen / max(1e-9, time.monotonic() - start)
        metrics = _validate(args, model, optimizer, split, step, best, tok_s, start)
    return metrics


def _validate(args, model, optimizer, split, step, best, tok_s, start) -> dict:
    loss = validation_loss(model, split.validation)
    metrics = {
        "step": step,
        "step_validation_loss": loss,
        "best_validation_loss": min(best, loss),
        "train_tokens_per_s": tok_s,
        "train_seconds": time.monotonic() - start,
        "data": Path(args.data).name,
    }
    if loss < best:
        save_model(args.out, model, {**metrics, "validation_loss": loss,
                                     "validation_bits_per_byte": bits_per_byte(loss)})
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "trainer.pt.tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "config": json.dumps(model.config.to_dict())}, tmp)
    tmp.replace(args.out / "trainer.pt")
    return metrics


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        metrics = train(args)
    except (DataError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the best checkpoint so far is in", args.out, file=sys.stderr)
        return 130
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
