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

from lstm_service.model.card import signature, state_names
from lstm_service.model.config import FAST_PATH_KINDS
from lstm_service.model.lm import LanguageModel

from .parity import CHECK_SHAPES, TOLERANCE, ort_session  # noqa: F401 (CHECK_SHAPES: export/explain.py)
from .parity import parity_errors as shared_parity_errors

OPSET = 17


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
    return ort_session(path)


@torch.no_grad()
def parity_errors(model: LanguageModel, path: Path, seed: int = 0) -> Dict[str, float]:
    """Largest |ORT - torch| over CHECK_SHAPES, and |stepwise - one call| for carried state
    (export/parity.py, shared with users' models)."""
    model = model.eval()
    config = model.config

    def reference(tokens: np.ndarray, state: Tuple[np.ndarray, ...]):
        logits, hn, cn = model(torch.from_numpy(tokens), torch.from_numpy(state[0]), torch.from_numpy(state[-1]))
        return logits.numpy(), (hn.numpy(), cn.numpy())[: len(state)]

    return shared_parity_errors(path, config.vocab_size, config.layers, config.hidden_size,
                                state_names(config.has_cell_state), reference, seed)


def check_parity(model: LanguageModel, path: Path) -> Dict[str, float]:
    errors = parity_errors(model, path)
    bad = {k: v for k, v in errors.items() if v > TOLERANCE}
    if bad:
        raise ExportError(f"{path}: export parity errors above {TOLERANCE}: {bad}")
    return errors
