"""The vocabulary of a user's model, for its model directory: vocab.txt (words) or
tokenizer.json (a Hugging Face tokenizer) copied beside model.onnx and described
in model.json's "vocab" entry; or the byte vocabulary, which needs no file.

Read with the serving side's own classes (service/vocab*.py), so what export
checks is what the server will do.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lstm_service.model.card import sha256_of
from lstm_service.model.data import VALIDATION_FRACTION
from lstm_service.service.core.vocab import BytesVocab, Vocab
from lstm_service.service.core.vocab_words import SPLITS, WordsVocab, read_vocab_file

from .onnx import ExportError


@dataclass
class VocabChoice:
    """What the command line said about the vocabulary."""

    vocab: Optional[Path] = None  # vocab.txt: one token per line, id = line number
    tokenizer: Optional[Path] = None  # tokenizer.json
    unk: str = "<unk>"  # used when the vocabulary has it; "" for none
    eos: str = "<eos>"  # a newline in text; used when the vocabulary has it; "" for none
    lowercase: bool = False
    split: str = "whitespace"


def prepare(choice: VocabChoice, out: Path) -> "tuple[dict, Vocab]":
    """Copy the vocabulary file into ``out``; return model.json's "vocab" entry and the vocabulary."""
    if choice.vocab and choice.tokenizer:
        raise ExportError("give either --vocab or --tokenizer, not both")
    if choice.vocab:
        try:
            words = read_vocab_file(Path(choice.vocab))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ExportError(f"--vocab: {exc}") from exc
        if choice.split not in SPLITS:
            raise ExportError(f"--split {choice.split!r}: allowed {', '.join(SPLITS)}")
        unk = choice.unk if choice.unk and choice.unk in words else None
        eos = choice.eos if choice.eos and choice.eos in words else None
        vocab: Vocab = WordsVocab(words, unk=unk, eos=eos, lowercase=choice.lowercase, split=choice.split)
        target = _copy(Path(choice.vocab), out / "vocab.txt")
        entry = {"kind": "words", "size": vocab.size, "file": target.name, "sha256": sha256_of(target),
                 "unk": unk, "eos": eos, "lowercase": choice.lowercase, "split": choice.split}
        return entry, vocab
    if choice.tokenizer:
        from tokenizers import Tokenizer

        from lstm_service.service.core.vocab_tokenizer import TokenizerVocab

        try:
            vocab = TokenizerVocab(Tokenizer.from_file(str(choice.tokenizer)))
        except Exception as exc:  # the library raises its own (Rust) exception types
            raise ExportError(f"--tokenizer {choice.tokenizer}: not a tokenizer.json the tokenizers library "
                              f"reads ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
        target = _copy(Path(choice.tokenizer), out / "tokenizer.json")
        return {"kind": "tokenizer", "size": vocab.size, "file": target.name, "sha256": sha256_of(target)}, vocab
    return {"kind": "bytes", "size": 256}, BytesVocab(256)


def _copy(source: Path, target: Path) -> Path:
    if not (target.exists() and source.resolve() == target.resolve()):  # already in place: re-exporting
        shutil.copyfile(source, target)
    return target


def validation_ids(vocab: Vocab, data: Path) -> np.ndarray:
    """The last 10% of ``data`` (from a line start, so no word is cut) as the vocabulary's ids."""
    text = Path(data).read_text(encoding="utf-8")
    cut = int(len(text) * (1.0 - VALIDATION_FRACTION))
    newline = text.find("\n", cut)
    tail = text[newline + 1:] if newline >= 0 else text[cut:]
    try:
        ids = np.asarray(vocab.ids_of_text(tail, "--data"), dtype=np.int64)
    except Exception as exc:  # InvalidArgument: a word without <unk> to stand for it
        raise ExportError(f"--data {data}: {exc}") from exc
    if ids.size < 2:
        raise ExportError(f"--data {data}: its last 10% has fewer than 2 tokens")
    return ids
