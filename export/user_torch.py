"""A user's own PyTorch language model -> the service's ONNX signature.

Accepted: modules in pytorch/examples word_language_model's convention,

    forward(input [T,B] int64, hidden) -> (logits or log-probs [T,B,V] or [T*B,V], hidden)

with ``hidden`` a tuple (h, c) of [L,B,H] (LSTM) or one [L,B,H] tensor (GRU, RNN),
and, with ``batch_first``, the same with input [B,T] and output [B,T,V] or [B*T,V]
(the state stays [L,B,H], as nn.LSTM(batch_first=True) keeps it). The module is
probed once on a small input (T != B, so the two layouts cannot be confused); what
does not fit is refused with one line saying what the wrapper expected. The wrapper
turns it into tokens [B,T] + h0 (+ c0) -> logits [B,T,V] + hn (+ cn), dynamic B and T.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from lstm_service.model.card import state_names

from .onnx import OPSET, ExportError

PROBE_T, PROBE_B = 3, 2  # different on purpose: [T,B,V] and [B,T,V] must not look alike


def expectation(batch_first: bool) -> str:
    if batch_first:
        return ("the wrapper expected (--batch-first) forward(input [B,T] int64, hidden) -> (logits [B,T,V] or "
                "[B*T,V], hidden), hidden a tuple (h, c) of [L,B,H] or one [L,B,H] tensor")
    return ("the wrapper expected forward(input [T,B] int64, hidden) -> (logits [T,B,V] or [T*B,V], hidden), "
            "hidden a tuple (h, c) of [L,B,H] (LSTM) or one [L,B,H] tensor (GRU/RNN); "
            "for input [B,T] pass --batch-first")


def load_class(spec: str):
    """``path/to/file.py:Class`` or ``package.module:Class``."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ExportError(f"--module {spec!r}: expected FILE.py:Class or package.module:Class")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ExportError(f"--module {spec!r}: {path} does not exist")
        module_name = f"user_model_{path.stem}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)  # type: ignore[arg-type]
        sys.modules[module_name] = module
        loader.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        module = importlib.import_module(where)
    cls = getattr(module, name, None)
    if cls is None:
        raise ExportError(f"--module {spec!r}: {where} has no {name!r}")
    return cls


def build_module(spec: str, kwargs_path: Optional[Path], checkpoint: Path) -> nn.Module:
    """The user's class, built with its kwargs and loaded with its state_dict (never a pickled module)."""
    kwargs = json.loads(Path(kwargs_path).read_text()) if kwargs_path else {}
    if not isinstance(kwargs, dict):
        raise ExportError(f"--kwargs {kwargs_path}: expected a JSON object of constructor arguments")
    module = load_class(spec)(**kwargs)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ExportError(f"--checkpoint {checkpoint} does not fit {spec}: "
                          f"{' '.join(line.strip() for line in first[:3])}") from exc
    return module.eval()


@dataclass(frozen=True)
class Probe:
    """What probing the module found: the state's parts and sizes, the head's size, the cell."""

    parts: Tuple[str, ...]
    layers: int
    hidden: int
    vocab_size: int
    cell: str
    embed_size: int


def _recurrent(module: nn.Module) -> Optional[nn.RNNBase]:
    return next((m for m in module.modules() if isinstance(m, nn.RNNBase)), None)


def initial_hidden(module: nn.Module, batch: int):
    if hasattr(module, "init_hidden"):
        return module.init_hidden(batch)
    rnn = _recurrent(module)
    if rnn is None:
        raise ExportError("the module has no init_hidden(batch) and no nn.LSTM/nn.GRU/nn.RNN to size its state "
                          "from; add init_hidden(batch) returning (h, c) or h of [L,B,H]")
    zeros = torch.zeros(rnn.num_layers, batch, rnn.hidden_size)
    return (zeros, zeros.clone()) if isinstance(rnn, nn.LSTM) else zeros


def _parts_of(hidden, batch_first: bool) -> Tuple[Tensor, ...]:
    parts = (hidden,) if isinstance(hidden, Tensor) else tuple(hidden) if isinstance(hidden, (tuple, list)) else ()
    if len(parts) not in (1, 2) or not all(isinstance(p, Tensor) and p.dim() == 3 for p in parts):
        raise ExportError(f"the module's hidden state is {_describe(hidden)}; {expectation(batch_first)}")
    return parts


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {list(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(_describe(v) for v in value[:3])})"
    return f"a {type(value).__name__}"


@torch.no_grad()
def probe(module: nn.Module, batch_first: bool, vocab_size: int) -> Probe:
    """Run the module once on [T=3, B=2] and check every shape against the convention."""
    hidden = initial_hidden(module, PROBE_B)
    parts = _parts_of(hidden, batch_first)
    layers, batch, size = parts[0].shape
    if batch != PROBE_B or any(p.shape != parts[0].shape for p in parts):
        raise ExportError(f"init_hidden({PROBE_B}) gave {_describe(hidden)}, not [L, {PROBE_B}, H]; "
                          f"{expectation(batch_first)}")
    shape = (PROBE_B, PROBE_T) if batch_first else (PROBE_T, PROBE_B)
    tokens = torch.zeros(shape, dtype=torch.long)
    try:
        out = module(tokens, hidden)
    except Exception as exc:  # a user's forward can fail any way; say how in one line
        raise ExportError(f"{type(module).__name__}.forward failed on input {list(shape)} int64: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
                          f"{expectation(batch_first)}") from exc
    if not isinstance(out, (tuple, list)) or len(out) != 2 or not isinstance(out[0], Tensor):
        raise ExportError(f"{type(module).__name__}.forward returned {_describe(out)}; {expectation(batch_first)}")
    logits, new_hidden = out
    heads = logits.shape[-1] if logits.dim() in (2, 3) else -1
    fits = (logits.dim() == 3 and tuple(logits.shape[:2]) == shape) or \
        (logits.dim() == 2 and logits.shape[0] == PROBE_T * PROBE_B)
    if not fits:
        raise ExportError(f"{type(module).__name__}.forward on input {list(shape)} returned logits of shape "
                          f"{list(logits.shape)}; {expectation(batch_first)}")
    new_parts = _parts_of(new_hidden, batch_first)
    if len(new_parts) != len(parts) or any(n.shape != p.shape for n, p in zip(new_parts, parts)):
        raise ExportError(f"{type(module).__name__}.forward returned hidden {_describe(new_hidden)} for hidden "
                          f"{_describe(hidden)}; the state must keep its structure and shape")
    if vocab_size != heads:
        which = "smaller" if vocab_size < heads else "larger"
        raise ExportError(f"the vocabulary has {vocab_size} tokens, {which} than the model's head of {heads}; "
                          "they must be the same size (one token per output of the head)")
    rnn = _recurrent(module)
    cell = type(rnn).__name__.lower() if rnn is not None else ("lstm" if len(parts) == 2 else "rnn")
    embedding = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None)
    return Probe(state_names(len(parts) == 2), int(layers), int(size), int(heads), cell,
                 int(embedding.embedding_dim) if embedding is not None else 0)


class _Serving(nn.Module):
    """The user's module in the service's layout: tokens [B,T] in, logits [B,T,V] out."""

    def __init__(self, user: nn.Module, batch_first: bool) -> None:
        super().__init__()
        self.user, self.batch_first = user, batch_first

    def step(self, tokens: Tensor, hidden):
        batch, time_steps = tokens.shape[0], tokens.shape[1]
        out, hidden = self.user(tokens if self.batch_first else tokens.transpose(0, 1), hidden)
        if self.batch_first:
            return out.reshape(batch, time_steps, -1), hidden
        return out.reshape(time_steps, batch, -1).transpose(0, 1), hidden


class _ServingWithCell(_Serving):
    def forward(self, tokens: Tensor, h0: Tensor, c0: Tensor):
        logits, (hn, cn) = self.step(tokens, (h0, c0))
        return logits, hn, cn


class _ServingHiddenOnly(_Serving):
    def forward(self, tokens: Tensor, h0: Tensor):
        logits, hn = self.step(tokens, h0)
        return logits, hn


def wrap(module: nn.Module, found: Probe, batch_first: bool) -> _Serving:
    return (_ServingWithCell if len(found.parts) == 2 else _ServingHiddenOnly)(module, batch_first).eval()


def export_user_onnx(module: nn.Module, found: Probe, batch_first: bool, path: Path) -> _Serving:
    wrapper = wrap(module, found, batch_first)
    inputs = ["tokens", *(f"{p}0" for p in found.parts)]
    outputs = ["logits", *(f"{p}n" for p in found.parts)]
    dynamic = {"tokens": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    dynamic.update({name: {1: "batch"} for name in inputs[1:] + outputs[1:]})
    example = (torch.zeros(2, 3, dtype=torch.long),
               *(torch.zeros(found.layers, 2, found.hidden) for _ in found.parts))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter and batch_first notices; parity is checked instead
        torch.onnx.export(wrapper, example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=dynamic)
    return wrapper


def reference(wrapper: _Serving):
    """The torch side of the parity check, in numpy."""

    @torch.no_grad()
    def run(tokens: np.ndarray, state):
        out = wrapper(torch.from_numpy(tokens), *(torch.from_numpy(s) for s in state))
        return out[0].numpy(), tuple(o.numpy() for o in out[1:])

    return run
