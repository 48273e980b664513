"""Validation loss of an exported model, measured through onnxruntime.

    python -m lstm_service.export.evaluate --model models/shakespeare --data ../shared/data/tinyshakespeare.txt

Reads the validation text (the last 10%) exactly as model/evaluate.py does
(same streams, same chunking, state carried), so torch and ONNX figures are
comparable. Imports only numpy, onnxruntime and the numpy-only parts of
lstm_service.model (data, card): it runs where the serving install does,
without torch.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from lstm_service.model.card import ModelCardError, load_card
from lstm_service.model.data import EVAL_SEQ_LEN, EVAL_STREAMS, DataError, batchify, chunks, load_split


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def onnx_validation_loss(path: Path, stream: np.ndarray, layers: int, hidden: int, has_c: bool) -> float:
    """Mean next-byte cross-entropy in nats of the ONNX model at ``path`` over ``stream``."""
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lstm_service.export.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="model directory (model.json + ONNX files)")
    p.add_argument("--data", type=Path, required=True, help="the training text; its last 10%% is measured")
    p.add_argument("--precision", default="all", help="comma-separated precisions, or 'all' (default)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        card = load_card(args.model)
        wanted = list(card.precisions) if args.precision == "all" else args.precision.split(",")
        validation = load_split(args.data).validation
        results = {}
        for precision in wanted:
            path = card.verify(precision)  # refuses a file whose sha256 differs from the card
            started = time.monotonic()
            loss = onnx_validation_loss(path, validation, card.layers, card.hidden_size, card.has_cell_state)
            results[precision] = {"validation_loss": round(loss, 5),
                                  "validation_bits_per_byte": round(loss / math.log(2), 5),
                                  "seconds": round(time.monotonic() - started, 1)}
            print(f"{precision}: {loss:.4f} nats/byte ({loss / math.log(2):.3f} bits) on the last 10% of "
                  f"{args.data.name}, {validation.size} bytes", file=sys.stderr, flush=True)
    except (ModelCardError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
