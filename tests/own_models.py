"""Builders for the "serve your own model" tests: users' torch modules with random weights,
their vocabularies, a foreign ONNX file, and the export commands run as a user runs them.
The expected answers come from the users' own torch modules, never from the service."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import List, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "word_language_model" / "model.py"
USER_MODULES = Path(__file__).resolve().parent / "user_modules.py"
WORDS = ["<unk>", "<eos>", "the", "clouds", "are", "in", "sky", ",", "."] + [f"word{i}" for i in range(39)]
SENTENCE = "the clouds are in the"


def example_class():
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        from model import RNNModel
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    return RNNModel


def randomize(module, seed: int, scale: float = 0.3):
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)
    return module.eval()


def save_user_model(root: Path, module, kwargs: dict, words: Sequence[str] = WORDS) -> dict:
    """The files a user has: state_dict, constructor kwargs, vocab.txt."""
    import torch

    root.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), root / "model.pt")
    (root / "kwargs.json").write_text(json.dumps(kwargs))
    (root / "vocab.txt").write_text("\n".join(words) + "\n")
    return {"checkpoint": root / "model.pt", "kwargs": root / "kwargs.json", "vocab": root / "vocab.txt"}


def export(*args) -> int:
    from lstm_service.export.__main__ import main

    return main([str(a) for a in args])


def word_ids(text: str, words: Sequence[str] = WORDS) -> List[int]:
    return [words.index(w) for w in text.split()]


def torch_logprobs(module, ids: Sequence[int], batch_first: bool = False) -> np.ndarray:
    """log-softmax of the user's module's output at every position, [T, V], from its zero state."""
    import torch

    with torch.no_grad():
        tokens = torch.tensor(ids, dtype=torch.long)[None, :] if batch_first else torch.tensor(ids)[:, None]
        if hasattr(module, "init_hidden"):
            hidden = module.init_hidden(1)
        else:
            rnn = next(m for m in module.modules() if isinstance(m, torch.nn.RNNBase))
            zeros = torch.zeros(rnn.num_layers, 1, rnn.hidden_size)
            hidden = (zeros, zeros.clone()) if isinstance(rnn, torch.nn.LSTM) else zeros
        out, _ = module(tokens, hidden)
        return torch.log_softmax(out.reshape(len(ids), -1), dim=-1).numpy()


def write_foreign_onnx(path: Path, module) -> None:
    """An RNNModel exported elsewhere: time-first input_ids [T,B], state h_in/c_in -> h_out/c_out, scores [T,B,V]."""
    import torch

    class Exported(torch.nn.Module):
        def __init__(self, lm) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, h_in, c_in):
            out, (h, c) = self.lm(input_ids, (h_in, c_in))
            return out.view(input_ids.shape[0], input_ids.shape[1], -1), h, c

    zeros = module.init_hidden(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's notices: this is someone else's export
        torch.onnx.export(Exported(module).eval(), (torch.zeros(3, 2, dtype=torch.long), *zeros), str(path),
                          dynamo=False, opset_version=17, input_names=["input_ids", "h_in", "c_in"],
                          output_names=["scores", "h_out", "c_out"],
                          dynamic_axes={"input_ids": {0: "T", 1: "B"}, "scores": {0: "T", 1: "B"},
                                        "h_in": {1: "B"}, "c_in": {1: "B"}, "h_out": {1: "B"}, "c_out": {1: "B"}})


BPE_TEXT = ("the clouds are in the sky. Les nuages sont dans le ciel, l'été. 雲は空にある。 "
            "Ünïcödé wörds 🌧️ and more words.\n") * 8


def bpe_tokenizer(text: str = BPE_TEXT, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained here on ``text``, one line a sample (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(text.splitlines(), trainer)
    return tokenizer


def bpe_tokenizer_file(path: Path, vocab_size: int = 300) -> Path:
    """bpe_tokenizer() saved as a tokenizer.json at ``path``."""
    bpe_tokenizer(vocab_size=vocab_size).save(str(path))
    return path
