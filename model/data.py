"""Bytes <-> token ids, the train/validation split and truncated-BPTT batches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np

VALIDATION_FRACTION = 0.1  # the last 10% of the text
# How validation text is read, by torch (model/evaluate.py) and by onnxruntime
# (export/evaluate.py) alike: this many parallel streams, each from a zero
# state, in chunks of this many bytes with the state carried. Here, in a
# numpy-only module, so the onnxruntime evaluator needs no torch.
EVAL_STREAMS = 8
EVAL_SEQ_LEN = 256


class DataError(Exception):
    """The training text cannot be used."""


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(ids) -> str:
    # errors="replace": a sampled sequence may cut a multi-byte character in half.
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # uint8 byte ids
    validation: np.ndarray


def load_split(path: Path) -> Split:
    """The file's bytes, split into the first 90% (train) and last 10% (validation)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training text {path} does not exist or is not a file")
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if data.size < 20:
        raise DataError(f"training text {path} has {data.size} bytes; at least 20 are needed")
    cut = int(data.size * (1.0 - VALIDATION_FRACTION))
    return Split(train=data[:cut], validation=data[cut:])


def batchify(stream: np.ndarray, batch: int) -> np.ndarray:
    """Cut one id stream into ``batch`` contiguous rows [B, N] (the tail is dropped)."""
    per_row = stream.size // batch
    if per_row < 2:
        raise DataError(
            f"text of {stream.size} bytes is too short for {batch} parallel streams; "
            f"use a smaller --batch-size or a longer text"
        )
    return stream[: per_row * batch].reshape(batch, per_row).astype(np.int64)


def chunks(rows: np.ndarray, seq_len: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(inputs [B,T], targets [B,T]) windows along the rows; targets are inputs shifted by one."""
    for start in range(0, rows.shape[1] - 1, seq_len):
        end = min(start + seq_len, rows.shape[1] - 1)
        yield rows[:, start:end], rows[:, start + 1 : end + 1]
