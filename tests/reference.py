"""The expected answer for served results: one plain onnxruntime call over the whole text."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from lstm_service.model.card import load_card


class Reference:
    """Log-probabilities after every token of a text, from a zero state, in one call."""

    def __init__(self, model_dir: Path) -> None:
        self.card = load_card(model_dir)
        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])

    def logprobs(self, tokens) -> np.ndarray:
        """tokens: bytes (byte-level ids) or a sequence of ids -> [T, V] float64 log-probs."""
        if isinstance(tokens, (bytes, bytearray)):
            tokens = np.frombuffer(bytes(tokens), dtype=np.uint8)
        ids = np.asarray(tokens, dtype=np.int64)[None, :]
        shape = (self.card.layers, 1, self.card.hidden_size)
        feeds = {"tokens": ids, "h0": np.zeros(shape, np.float32)}
        if self.card.has_cell_state:
            feeds["c0"] = np.zeros(shape, np.float32)
        logits = self.session.run(["logits"], feeds)[0][0].astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
