"""Write a model directory: model.onnx (+ model.int8.onnx), model.explain.onnx and model.json.

Every file is checked before the card that names it is written: onnx.checker,
then parity with torch (fp32 must agree to 1e-4; int8's distance is recorded).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from lstm_service.model.card import sha256_of, write_card
from lstm_service.model.evaluate import bits_per_byte
from lstm_service.model.lm import LanguageModel

from .evaluate import onnx_validation_loss
from .explain import write_explain
from .onnx import OPSET, check_onnx_file, check_parity, export_onnx, io_spec, parity_errors
from .quantize import quantize_int8


def write_model_dir(
    model: LanguageModel,
    out: Path,
    name: str,
    quantize: Optional[str] = None,
    validation: Optional[np.ndarray] = None,
    data_name: Optional[str] = None,
    training: Optional[dict] = None,
    log: Callable[[str], None] = lambda line: None,
) -> dict:
    """Export ``model`` into ``out`` and return the card written to out/model.json."""
    config = model.eval().config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def describe(file: Path) -> dict:
        entry = {"file": file.name, "sha256": sha256_of(file), "bytes": file.stat().st_size}
        if validation is not None:
            started = time.monotonic()
            loss = onnx_validation_loss(file, validation, config.layers, config.hidden_size, config.has_cell_state)
            entry.update(validation_loss=round(loss, 5), validation_bits_per_byte=round(bits_per_byte(loss), 5))
            log(f"{file.name}: validation loss {loss:.4f} nats/byte ({bits_per_byte(loss):.3f} bits) "
                f"through onnxruntime in {time.monotonic() - started:.0f}s")
        return entry

    fp32 = out / "model.onnx"
    export_onnx(model, fp32)
    check_onnx_file(fp32)
    parity = check_parity(model, fp32)
    log(f"model.onnx: parity torch vs onnxruntime {parity['torch_vs_onnxruntime']:.2e}, "
        f"stepwise vs whole {parity['stepwise_vs_whole']:.2e}")
    precisions = {"fp32": {**describe(fp32), "parity": parity}}
    if quantize == "int8":
        int8 = out / "model.int8.onnx"
        quantize_int8(fp32, int8)
        check_onnx_file(int8)
        precisions["int8"] = {**describe(int8), "parity": parity_errors(model, int8)}
    # The same weights with the gates as one more output, for the Explain RPC (docs/explain.md).
    explain = write_explain(model, out, fp32)
    log(f"{explain['file']}: explain vs model.onnx {explain['parity']['explain_vs_model_onnx']:.2e}")
    card = {
        "name": name,
        "cell": config.cell,
        "has_cell_state": config.has_cell_state,
        "vocab": {"kind": "bytes", "size": config.vocab_size},
        "embed_size": config.embed_size,
        "hidden_size": config.hidden_size,
        "layers": config.layers,
        "dropout": config.dropout,
        "opset": OPSET,
        **io_spec(model),
        "precisions": precisions,
        "explain": explain,
        "validation": {"data": data_name, "fraction": 0.1, "measured_with": "onnxruntime CPUExecutionProvider"},
        "training": training or {},
    }
    path = write_card(out, card)
    log(f"wrote {path}")
    return card
