"""Finish the model directory of a user's model (a torch module or a foreign ONNX file,
already written as out/model.onnx in the service's signature): check the graph,
check parity, optionally quantize, measure validation loss, write model.json, and
load it the way the server does, so a card that does not describe its graph is
refused here rather than at serving time.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from lstm_service.model.card import ModelCardError, load_card, sha256_of, signature, write_card

from .evaluate import onnx_validation_loss
from .onnx import OPSET, ExportError, check_onnx_file
from .parity import Reference, over_tolerance, parity_errors
from .quantize import quantize_int8


def finish_model_dir(
    out: Path, *, name: str, cell: str, parts: Sequence[str], layers: int, hidden: int, vocab_size: int,
    embed_size: int, vocab_entry: dict, source: dict, reference: Optional[Reference] = None,
    quantize: Optional[str] = None, validation: Optional[np.ndarray] = None, data_name: Optional[str] = None,
    explain: Optional[Callable[[], Optional[dict]]] = None, log: Callable[[str], None] = lambda line: None,
) -> dict:
    """``explain``: writes model.explain.onnx and returns its card entry (or None: the model has none)."""
    fp32 = out / "model.onnx"
    check_onnx_file(fp32)
    errors = parity_errors(fp32, vocab_size, layers, hidden, parts, reference)
    bad = over_tolerance(errors)
    if bad:
        raise ExportError(f"{fp32}: parity errors above 1e-4: {bad}")
    log("model.onnx: parity " + ", ".join(f"{k.replace('_', ' ')} {v:.2e}" for k, v in errors.items()))
    unit = {"bytes": "byte", "words": "word"}.get(vocab_entry["kind"], "token")

    def describe(file: Path) -> dict:
        entry = {"file": file.name, "sha256": sha256_of(file), "bytes": file.stat().st_size}
        if validation is not None:
            started = time.monotonic()
            loss = onnx_validation_loss(file, validation, layers, hidden, len(parts) == 2)
            entry.update(validation_loss=round(loss, 5), validation_perplexity=round(math.exp(loss), 2))
            log(f"{file.name}: validation loss {loss:.4f} nats/{unit} (perplexity {math.exp(loss):.1f}) "
                f"over {validation.size} tokens through onnxruntime in {time.monotonic() - started:.0f}s")
        return entry

    precisions = {"fp32": {**describe(fp32), "parity": errors}}
    if quantize == "int8":
        int8 = out / "model.int8.onnx"
        quantize_int8(fp32, int8)
        check_onnx_file(int8)
        precisions["int8"] = {**describe(int8), "parity": parity_errors(int8, vocab_size, layers, hidden, parts,
                                                                          reference)}
    card = {
        "name": name, "cell": cell, "has_cell_state": len(parts) == 2, "vocab": vocab_entry,
        "embed_size": embed_size, "hidden_size": hidden, "layers": layers, "opset": OPSET,
        **signature(vocab_size, hidden, layers, len(parts) == 2),
        "precisions": precisions,
        "validation": {"data": data_name, "fraction": 0.1, "unit": f"nats/{unit}",
                       "measured_with": "onnxruntime CPUExecutionProvider"},
        "source": source,
    }
    entry = explain() if explain is not None else None
    if entry:
        card["explain"] = entry
    path = write_card(out, card)
    try:
        _load_as_served(out)
    except ExportError:
        path.unlink()  # no card for a model the server would refuse
        raise
    log(f"wrote {path}")
    return card


def _load_as_served(out: Path) -> None:
    """The server's own checks: the card, each file's sha256, the graph's signature, the vocabulary."""
    from lstm_service.service.api.errors import ConfigError
    from lstm_service.service.core.runtime import Runtime
    from lstm_service.service.core.vocab import load_vocab

    try:
        card = load_card(out)
        for precision in card.precisions:
            Runtime.load(card, precision, "cpu")
        load_vocab(card)
    except (ModelCardError, ConfigError, ValueError) as exc:
        raise ExportError(f"{out}: the server would refuse this model: {exc}") from exc
