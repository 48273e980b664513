"""torch -> ONNX with the serving signature, and the checks that make the export honest.

Signature (B and T dynamic):
    tokens int64 [B,T], h0 float [L,B,H], c0 float [L,B,H]   (no c0 for gru/rnn)
 -> logits float [B,T,V], hn float [L,B,H], cn float [L,B,H] (no cn for gru/rnn)

lstm/gru/rnn go through torch.nn's modules and the TorchScript exporter,
which emits the native ONNX LSTM/GRU/RNN operators. The peephole and
coupled variants are scripted, so their time loop becomes an ONNX Loop and
T stays dynamic.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from lstm_service.model.card import signature
from lstm_service.model.config import FAST_PATH_KINDS
from lstm_service.model.lm import LanguageModel

OPSET = 17
# Shapes used to check the export; all differ from the (2, 3) example it is traced with.
CHECK_SHAPES = ((1, 1), (1, 7), (3, 5), (4, 16), (8, 2))
TOLERANCE = 1e-4


class ExportError(Exception):
    """The exported graph does not reproduce the torch model."""


class _WithCellState(nn.Module):
    def __init__(self, lm: LanguageModel) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, tokens: Tensor, h0: Tensor, c0: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return self.lm(tokens, h0, c0)


class _HiddenOnly(nn.Module):
    def __init__(self, lm: LanguageModel) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, tokens: Tensor, h0: Tensor) -> Tuple[Tensor, Tensor]:
        logits, hn, _ = self.lm(tokens, h0, h0)
        return logits, hn


def io_names(has_cell_state: bool) -> Tuple[List[str], List[str]]:
    spec = signature(0, 0, 0, has_cell_state)
    return [i["name"] for i in spec["inputs"]], [o["name"] for o in spec["outputs"]]


def export_onnx(model: LanguageModel, path: Path) -> None:
    model = model.eval()
    config = model.config
    inputs, outputs = io_names(config.has_cell_state)
    wrapper = (_WithCellState if config.has_cell_state else _HiddenOnly)(model)
    example_tokens = torch.zeros(2, 3, dtype=torch.long)
    h0, c0 = model.initial_state(2)
    args = (example_tokens, h0, c0) if config.has_cell_state else (example_tokens, h0)
    dynamic = {"tokens": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    for name in inputs[1:] + outputs[1:]:
        dynamic[name] = {1: "batch"}
    with warnings.catch_warnings():
        # TorchScript and its exporter warn that they are legacy, and about
        # batch_first LSTMs; the graph is checked against torch below instead.
        warnings.simplefilter("ignore")
        if config.cell not in FAST_PATH_KINDS:
            wrapper = torch.jit.script(wrapper)
        torch.onnx.export(
            wrapper, args, str(path), dynamo=False, opset_version=OPSET,
            input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
        )


def io_spec(model: LanguageModel) -> Dict[str, list]:
    c = model.config
    return signature(c.vocab_size, c.hidden_size, c.layers, c.has_cell_state)


def check_onnx_file(path: Path) -> None:
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, tokens: np.ndarray, h: np.ndarray, c: np.ndarray, has_c: bool):
    feeds = {"tokens": tokens, "h0": h}
    if has_c:
        feeds["c0"] = c
    out = session.run(None, feeds)
    return out[0], out[1], (out[2] if has_c else c)


@torch.no_grad()
def parity_errors(model: LanguageModel, path: Path, seed: int = 0) -> Dict[str, float]:
    """Largest |ORT - torch| over CHECK_SHAPES, and |stepwise - one call| for carried state.

    Non-zero start states are used so the h0/c0 inputs are really exercised.
    """
    model = model.eval()
    config = model.config
    session = _ort_session(path)
    rng = np.random.default_rng(seed)
    torch_vs_ort = 0.0
    stepwise_vs_whole = 0.0
    for batch, time_steps in CHECK_SHAPES:
        tokens = rng.integers(0, config.vocab_size, size=(batch, time_steps), dtype=np.int64)
        shape = (config.layers, batch, config.hidden_size)
        h = rng.normal(0, 0.5, size=shape).astype(np.float32)
        c = rng.normal(0, 0.5, size=shape).astype(np.float32) if config.has_cell_state else h
        expected = model(torch.from_numpy(tokens), torch.from_numpy(h), torch.from_numpy(c))
        got = _run(session, tokens, h, c, config.has_cell_state)
        for e, g in zip(expected, got):
            torch_vs_ort = max(torch_vs_ort, float(np.abs(e.numpy() - g).max()))
        # One token at a time with the state carried must equal one T-token call.
        step_h, step_c, step_logits = h, c, []
        for t in range(time_steps):
            logits, step_h, step_c = _run(session, tokens[:, t : t + 1], step_h, step_c, config.has_cell_state)
            step_logits.append(logits)
        stepwise = (np.concatenate(step_logits, axis=1), step_h, step_c)
        for whole, steps in zip(got, stepwise):
            stepwise_vs_whole = max(stepwise_vs_whole, float(np.abs(whole - steps).max()))
    return {"torch_vs_onnxruntime": torch_vs_ort, "stepwise_vs_whole": stepwise_vs_whole}


def check_parity(model: LanguageModel, path: Path) -> Dict[str, float]:
    errors = parity_errors(model, path)
    bad = {k: v for k, v in errors.items() if v > TOLERANCE}
    if bad:
        raise ExportError(f"{path}: export parity errors above {TOLERANCE}: {bad}")
    return errors
