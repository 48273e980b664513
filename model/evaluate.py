"""Validation loss of a torch model over a byte stream, state carried across chunks."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .data import batchify, chunks
from .lm import LanguageModel

# The validation text is read as this many parallel streams, each starting from
# a zero state; export/evaluate.py measures the ONNX model the same way.
EVAL_STREAMS = 8
EVAL_SEQ_LEN = 256


@torch.no_grad()
def validation_loss(model: LanguageModel, stream: np.ndarray) -> float:
    """Mean next-byte cross-entropy in nats over ``stream``."""
    was_training = model.training
    model.eval()
    rows = batchify(stream, EVAL_STREAMS)
    h, c = model.initial_state(rows.shape[0])
    total, count = 0.0, 0
    for inputs, targets in chunks(rows, EVAL_SEQ_LEN):
        logits, h, c = model(torch.from_numpy(inputs), h, c)
        targets_t = torch.from_numpy(targets)
        total += F.cross_entropy(logits.flatten(0, 1), targets_t.flatten(), reduction="sum").item()
        count += targets_t.numel()
    model.train(was_training)
    return total / count


def bits_per_byte(nats: float) -> float:
    return nats / math.log(2)
