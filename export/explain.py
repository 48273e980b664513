"""The explain graph: model.explain.onnx, the same weights as model.onnx with
the cell's insides as one more output.

Signature (B and T dynamic):
    tokens int64 [B,T], h0 float [L,B,H], c0 float [L,B,H]   (no c0 for gru/rnn)
 -> logits [B,T,V], hn [L,B,H], cn [L,B,H] (no cn for gru/rnn),
    trace float [L,B,T,K,H]: channel k of the trace is card["explain"]["channels"][k]

It is checked against the fast model itself, model.onnx through onnxruntime
(same logits, same final state within TOLERANCE, on several shapes and
non-zero start states), and against torch, before the card names it.

    python -m lstm_service.export.explain MODEL_DIR [--out DIR]

adds the explain graph to an already exported lstm/gru/rnn model directory,
rebuilding the torch model from model.onnx's own weights (export/from_onnx.py).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from lstm_service.model.card import ModelCardError, load_card, sha256_of, write_card
from lstm_service.model.explain import ExplainLM, channel_names
from lstm_service.model.lm import LanguageModel

from .onnx import CHECK_SHAPES, OPSET, TOLERANCE, ExportError, _ort_session, check_onnx_file, io_names

EXPLAIN_FILE = "model.explain.onnx"
TRACE = "trace"


class _WithCellState(nn.Module):
    def __init__(self, explain: ExplainLM) -> None:
        super().__init__()
        self.explain = explain

    def forward(self, tokens: Tensor, h0: Tensor, c0: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.explain(tokens, h0, c0)


class _HiddenOnly(nn.Module):
    def __init__(self, explain: ExplainLM) -> None:
        super().__init__()
        self.explain = explain

    def forward(self, tokens: Tensor, h0: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        logits, hn, _, trace = self.explain(tokens, h0, h0)
        return logits, hn, trace


def explain_io_names(has_cell_state: bool):
    inputs, outputs = io_names(has_cell_state)
    return inputs, outputs + [TRACE]


def export_explain(model: LanguageModel, path: Path) -> None:
    """Script the explain stack (its time loop becomes an ONNX Loop) and export it."""
    model = model.eval()
    config = model.config
    explain = ExplainLM(model).eval()
    inputs, outputs = explain_io_names(config.has_cell_state)
    wrapper = (_WithCellState if config.has_cell_state else _HiddenOnly)(explain)
    tokens = torch.zeros(2, 3, dtype=torch.long)
    h0, c0 = model.initial_state(2)
    args = (tokens, h0, c0) if config.has_cell_state else (tokens, h0)
    dynamic = {"tokens": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"},
               TRACE: {1: "batch", 2: "time"}}
    for name in inputs[1:] + outputs[1:-1]:
        dynamic[name] = {1: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's legacy warnings; checked against model.onnx below
        torch.onnx.export(
            torch.jit.script(wrapper), args, str(path), dynamo=False, opset_version=OPSET,
            input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
        )


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _feeds(tokens: np.ndarray, h: np.ndarray, c: np.ndarray, has_c: bool) -> Dict[str, np.ndarray]:
    feeds = {"tokens": tokens, "h0": h}
    if has_c:
        feeds["c0"] = c
    return feeds


@torch.no_grad()
def explain_parity(model: LanguageModel, fast_path: Path, explain_path: Path, seed: int = 0,
                   log_probs: bool = False) -> Dict[str, float]:
    """Largest |explain - model.onnx| over logits and final state, |explain - torch| over
    the trace, and the shape check of the trace, on CHECK_SHAPES with non-zero start states.
    ``log_probs``: compare the log-softmax of the logits (model.onnx of a user's module may
    return log-probabilities; the service uses only their log-softmax)."""
    config = model.eval().config
    reference = ExplainLM(model).eval()
    fast, explain = _ort_session(fast_path), _ort_session(explain_path)
    has_c = config.has_cell_state
    rng = np.random.default_rng(seed)
    vs_fast = vs_torch = 0.0
    for batch, steps in CHECK_SHAPES:
        tokens = rng.integers(0, config.vocab_size, size=(batch, steps), dtype=np.int64)
        shape = (config.layers, batch, config.hidden_size)
        h = rng.normal(0, 0.5, size=shape).astype(np.float32)
        c = rng.normal(0, 0.5, size=shape).astype(np.float32) if has_c else h
        feeds = _feeds(tokens, h, c, has_c)
        want = fast.run(None, feeds)
        got = explain.run(None, feeds)
        if log_probs:
            want[0], got[0] = _log_softmax(want[0]), _log_softmax(got[0])
        for w, g in zip(want, got[:-1]):
            vs_fast = max(vs_fast, float(np.abs(w - g).max()))
        trace = reference(torch.from_numpy(tokens), torch.from_numpy(h), torch.from_numpy(c))[3].numpy()
        expected_shape = (config.layers, batch, steps, len(channel_names(config.cell)), config.hidden_size)
        if got[-1].shape != expected_shape:
            raise ExportError(f"{explain_path}: trace has shape {got[-1].shape}, expected {expected_shape}")
        vs_torch = max(vs_torch, float(np.abs(trace - got[-1]).max()))
    return {"explain_vs_model_onnx": vs_fast, "trace_vs_torch": vs_torch}


def write_explain(model: LanguageModel, out: Path, fast_path: Path, log_probs: bool = False) -> dict:
    """Export, check and describe out/model.explain.onnx; the card's "explain" entry."""
    path = Path(out) / EXPLAIN_FILE
    export_explain(model, path)
    check_onnx_file(path)
    parity = explain_parity(model, fast_path, path, log_probs=log_probs)
    bad = {k: v for k, v in parity.items() if v > TOLERANCE}
    if bad:
        raise ExportError(f"{path}: explain parity errors above {TOLERANCE}: {bad}")
    inputs, outputs = explain_io_names(model.config.has_cell_state)
    return {
        "file": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size,
        "inputs": inputs, "outputs": outputs, "trace": TRACE,
        "trace_shape": [model.config.layers, "batch", "time", "channels", model.config.hidden_size],
        "channels": list(channel_names(model.config.cell)),
        "checked_against": fast_path.name, "parity": parity,
    }


def add_to_model_dir(model_dir: Path, out: Path) -> dict:
    """Copy model_dir to out (unless the same) and add the explain graph to it."""
    from .from_onnx import model_from_onnx

    model_dir, out = Path(model_dir), Path(out)
    card = load_card(model_dir)
    fast_path = card.verify("fp32")
    if out.resolve() != model_dir.resolve():
        shutil.copytree(model_dir, out, dirs_exist_ok=True)
    model = model_from_onnx(fast_path, card)
    raw = {k: v for k, v in card.raw.items() if k != "format"}
    raw["explain"] = write_explain(model, out, out / fast_path.name)
    write_card(out, raw)
    return raw["explain"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lstm_service.export.explain", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path, help="an exported model directory (model.json + model.onnx)")
    p.add_argument("--out", type=Path, help="write the result here (default: into model_dir)")
    args = p.parse_args(argv)
    try:
        entry = add_to_model_dir(args.model_dir, args.out or args.model_dir)
    except (ModelCardError, ExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {entry['file']}: channels {', '.join(entry['channels'])}; parity {entry['parity']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
