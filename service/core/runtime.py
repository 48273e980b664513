"""One onnxruntime session for the served model.

    rt = Runtime.load(card, precision="fp32", device="auto")
    logits, state = rt.run(tokens, state)  # [B,T] int64, ([L,B,H] f32, ...) -> [B,T,V], ([L,B,H], ...)

The recurrent state is one tuple in the order of ``card.state_names``
(h and c for LSTM-like cells, h alone for GRU/RNN); nothing here asks which.
The providers the session really got are in ``rt.providers``: onnxruntime
lists CUDA as available where its libraries are missing and then quietly
falls back to CPU, so we report what ``get_providers()`` says, not what we
asked for.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
import onnxruntime as ort

from lstm_service.model.card import ModelCard, ModelCardError

from ..api.errors import ConfigError

log = logging.getLogger("service.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def requested_providers(device: str) -> List[str]:
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


@dataclass
class Runtime:
    card: ModelCard
    precision: str
    path: Path
    session: ort.InferenceSession
    providers: List[str]

    @classmethod
    def load(
        cls,
        card: ModelCard,
        precision: str = "fp32",
        device: str = "auto",
        intra_op_threads: int = 1,
        spin: bool = False,
    ) -> "Runtime":
        try:
            path = card.verify(precision)
        except ModelCardError as exc:
            raise ConfigError(str(exc)) from exc
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.log_severity_level = 3  # errors only; CUDA fallback is reported below
        wanted = requested_providers(device)
        fp16 = _is_fp16(card, precision)
        if fp16 and CUDA not in wanted:
            raise ConfigError(f"precision {precision!r} is fp16, which is never served on the CPU provider")
        if device == "auto":
            # On a machine without CUDA libraries onnxruntime logs a red error
            # while it tries the CUDA provider; under auto that is expected, and
            # we log our own one-line warning below instead.
            ort.set_default_logger_severity(4)
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
        finally:
            ort.set_default_logger_severity(2)
        got = list(session.get_providers())
        if device == "cuda" and CUDA not in got:
            raise ConfigError(
                f"--device cuda: onnxruntime could not start {CUDA} (got {got}); "
                "check the CUDA/cuDNN libraries or use --device cpu"
            )
        if CUDA in wanted and CUDA not in got:
            # Expected on CPU-only machines under --device auto; the "started" event
            # names the providers in use, so this is no warning.
            log.info("CUDA libraries are not usable here; onnxruntime runs on %s", ",".join(got))
        if fp16 and CUDA not in got:
            raise ConfigError(f"precision {precision!r} is fp16 and CUDA is not usable; refusing to run it on CPU")
        rt = cls(card=card, precision=precision, path=path, session=session, providers=got)
        rt._check_signature()
        return rt

    @classmethod
    def from_config(cls, card: ModelCard, config) -> "Runtime":
        """The runtime ``python -m lstm_service`` runs with ``config`` (a service.config.Config).

        The server and the benchmark's in-process ceiling both build theirs
        here, so a new onnxruntime option cannot reach one and not the other.
        """
        return cls.load(card, config.precision, config.device, config.ort_threads, config.ort_spin)

    def _check_signature(self) -> None:
        """Refuse to serve when model.json and the ONNX graph disagree (names, or the
        sizes the card states: layers, hidden size, vocabulary); a wrong card would
        otherwise pass its sha256 check and fail every call at run time."""
        spec = self.card.signature
        want_in, want_out = spec["inputs"], spec["outputs"]
        got_in = {i.name: i.shape for i in self.session.get_inputs()}
        got_out = {o.name: o.shape for o in self.session.get_outputs()}
        names_in, names_out = [i["name"] for i in want_in], [o["name"] for o in want_out]
        if sorted(got_in) != sorted(names_in) or sorted(got_out) != sorted(names_out):
            raise ConfigError(
                f"{self.path}: ONNX inputs {sorted(got_in)} / outputs {sorted(got_out)} do not match "
                f"model.json (expected {names_in} / {names_out})"
            )
        for want, got in [(w, got_in[w["name"]]) for w in want_in] + [(w, got_out[w["name"]]) for w in want_out]:
            for axis, (expected, actual) in enumerate(zip(want["shape"], got)):
                if isinstance(expected, int) and isinstance(actual, int) and expected != actual:
                    raise ConfigError(
                        f"{self.path}: {want['name']} has size {actual} on axis {axis} in the ONNX graph, "
                        f"but model.json says {expected} (layers {self.card.layers}, hidden_size "
                        f"{self.card.hidden_size}, vocab size {self.card.vocab_size}); the card does not "
                        "describe this model"
                    )
        self._inputs = names_in
        self._outputs = names_out

    @property
    def state_shape(self) -> Tuple[int, int]:
        """Per-session state shape [L, H]."""
        return (self.card.layers, self.card.hidden_size)

    @property
    def zero_state(self) -> Tuple[np.ndarray, ...]:
        """One session's state before any token: zeros [L, H] per part."""
        return tuple(np.zeros(self.state_shape, np.float32) for _ in self.card.state_names)

    def run(self, tokens: np.ndarray, state: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, Tuple[np.ndarray, ...]]:
        """tokens [B,T] int64, state ([L,B,H] float32, ...) -> logits [B,T,V], new state."""
        feeds = dict(zip(self._inputs, (tokens, *state)))
        out = self.session.run(self._outputs, feeds)
        return out[0], tuple(out[1:])


def _is_fp16(card: ModelCard, precision: str) -> bool:
    info = card.precisions.get(precision, {})
    return precision == "fp16" or str(info.get("dtype", "")).lower() in ("fp16", "float16")
