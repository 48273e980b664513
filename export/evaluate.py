"""Validation loss of an exported model, measured through onnxruntime.

Reads the validation text exactly as model/evaluate.py does (same streams,
same chunking, state carried), so torch and ONNX figures are comparable.
No torch here: this runs wherever onnxruntime does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lstm_service.model.data import batchify, chunks
from lstm_service.model.evaluate import EVAL_SEQ_LEN, EVAL_STREAMS


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def onnx_validation_loss(path: Path, stream: np.ndarray, layers: int, hidden: int, has_c: bool) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rows = batchify(stream, EVAL_STREAMS)
    h = np.zeros((layers, rows.shape[0], hidden), dtype=np.float32)
    c = h.copy()
    total, count = 0.0, 0
    for inputs, targets in chunks(rows, EVAL_SEQ_LEN):
        feeds = {"tokens": np.ascontiguousarray(inputs), "h0": h}
        if has_c:
            feeds["c0"] = c
        out = session.run(None, feeds)
        h = out[1]
        if has_c:
            c = out[2]
        logp = _log_softmax(out[0])
        total -= np.take_along_axis(logp, targets[..., None], axis=-1).sum()
        count += targets.size
    return float(total / count)
