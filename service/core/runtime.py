"""One onnxruntime session for the served model.

    rt = Runtime.load(card, precision="fp32", device="auto")
    logits, state = rt.run(tokens, state)  # [B,T] int64, ([L,B,H] f32, ...) -> [B,T,V], ([L,B,H], ...)
    logits, state = rt.run(tokens, state, lengths)  # rows of different lengths, when rt.mixes

Three ways of running a batch are used only where a load-time probe
(service/core/exactness.py) shows each row gets bitwise what it gets alone:
- ``mixes``: rows of different lengths in one call, padded to the longest, through
  the recurrent ops' ``sequence_lens`` input (wired in by service/core/sequence_lens.py).
  Off for graphs that cannot take it (the peephole and coupled cells' Loop, the int8
  model's DynamicQuantizeLSTM) and wherever the probe fails; then the batch runner
  groups steps by length.
- ``lone_exact``: one row alone gives what it gives in a batch. onnxruntime's CPU RNN
  op does not (its one-row GEMM path rounds differently); there a lone row runs as
  two copies of itself, so a session's results never depend on who shares its calls.
- ``wide``: a second session with two intra-op threads, for large batches
  (``wide_for``: at least WIDE_MIN_ROWS rows of at most WIDE_MAX_T tokens). A lone
  stream keeps the one-thread session. Only where both sessions agree bitwise.

The recurrent state is one tuple in the order of ``card.state_names``
(h and c for LSTM-like cells, h alone for GRU/RNN); nothing here asks which.
The providers the session really got are in ``rt.providers``: onnxruntime
lists CUDA as available where its libraries are missing and then quietly
falls back to CPU, so we report what ``get_providers()`` says, not what we
asked for.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import onnxruntime as ort

from lstm_service.model.card import ModelCard, ModelCardError

from ..api.errors import ConfigError
from . import exactness
from .sequence_lens import NAME as LENS, with_sequence_lens

log = logging.getLogger("service.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# The two-thread session runs batches of at least WIDE_MIN_ROWS rows of at most WIDE_MAX_T
# tokens. In-process (`python -m bench.ceiling --threads`: ORT step and CPU time at 1 vs 2
# intra-op threads, the shipped 2x512 model on the 2-core box; every pair bitwise equal),
# two threads cut the step from 8 rows up at about the same CPU (T=1: 0.55-0.66x the step at
# 0.96-1.11x the CPU; T=8: 0.54-0.60x at 1.03-1.14x), and below 8 rows save little
# (T=1 B=1-2: 0.8-1.0x) at 1.2-1.4x the CPU, the extra being thread wake-ups (no spinning:
# the engine shares the box with the front). In the server the picture is worse:
# - T >= 2 stays on one thread: letting T=8 batches of 8+ rows go wide lost in the server at
#   64 streams K=8, two A/B pairs back to back: 3637 vs 4533 and 2818 vs 3611 tok/s, 860 vs 766
#   and 957 vs 865 CPU µs per message (the second ORT thread competes with the front for the
#   other core, and every time step waits for both threads).
# - A lone stream's step stays on one thread: on two threads (tried, with the scheduler telling
#   the runtime when nothing else waited) its p50 did not improve (1.13 vs 1.04 ms and 2.13 vs
#   1.06 ms in two runs) and the server's CPU per message rose 40% (1301 vs 937 µs).
WIDE_MIN_ROWS = 8
WIDE_MAX_T = 1


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
    mixes: bool = False  # rows of different lengths may share one call (sequence_lens)
    lone_exact: bool = True  # a row alone is run as itself (else as two copies of itself)
    wide: Optional[ort.InferenceSession] = None  # two intra-op threads, for large batches
    why_not: Dict[str, str] = field(default_factory=dict)  # "mixes"/"rows"/"wide": why off

    @classmethod
    def load(
        cls,
        card: ModelCard,
        precision: str = "fp32",
        device: str = "auto",
        intra_op_threads: int = 1,
        spin: bool = False,
        mix: bool = True,
        wide_threads: int = 2,
    ) -> "Runtime":
        """``mix``: try running rows of different lengths in one call; ``wide_threads``: the
        intra-op threads of the large-batch session (0: none; only with intra_op_threads 1)."""
        try:
            path = card.verify(precision)
        except ModelCardError as exc:
            raise ConfigError(str(exc)) from exc
        wanted = requested_providers(device)
        fp16 = _is_fp16(card, precision)
        if fp16 and CUDA not in wanted:
            raise ConfigError(f"precision {precision!r} is fp16, which is never served on the CPU provider")
        if device == "auto":
            # On a machine without CUDA libraries onnxruntime logs a red error
            # while it tries the CUDA provider; under auto that is expected, and
            # we log our own one-line warning below instead.
            ort.set_default_logger_severity(4)
        edited = with_sequence_lens(path.read_bytes()) if mix else None
        try:
            session = _session(edited or str(path), intra_op_threads, spin, wanted)
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
        rt = cls(card=card, precision=precision, path=path, session=session, providers=got, mixes=edited is not None)
        rt._check_signature()
        rt._probe(mix, intra_op_threads, spin, wide_threads, edited or str(path))
        if rt.why_not:
            log.info("batching: %s", "; ".join(f"{k} off: {v}" for k, v in rt.why_not.items()))
        return rt

    def _probe(self, mix: bool, threads: int, spin: bool, wide_threads: int, source: Union[str, bytes]) -> None:
        """Keep each way of batching only where it is bitwise exact on this model (see the docstring);
        ``source``: what the serving session was built from (the edited graph, or the file)."""
        if not mix:
            self.why_not["mixes"] = "turned off"
        elif not self.mixes:
            self.why_not["mixes"] = ("the graph has no LSTM/GRU/RNN op that can take sequence_lens (a Loop, "
                                     "or DynamicQuantizeLSTM, whose batch-wide scales are not row-exact)")
        lone, failed = _passes(exactness.lone_rows_exact, self._feed, self, self.mixes)
        if not lone:
            # Two copies of a row help only where rows in a batch are exact among themselves;
            # the int8 model's are not (its activations' quantization scale spans the batch).
            if not failed and _passes(exactness.lone_rows_exact, self._feed, self, self.mixes, 2)[0]:
                self.why_not["rows"] = "a row alone rounds differently from the same row in a batch: " \
                                       "it runs as two copies of itself"
            else:
                self.why_not["rows"] = failed or "a row alone rounds differently from the same row in a batch, " \
                                                 "and rows depend on the rest of their batch"
                lone = True  # nothing to gain from two copies
        self.lone_exact = lone
        if self.mixes:
            mixed, failed = _passes(exactness.mixed_rows_exact, self.run, self)
            if not mixed:
                self.why_not["mixes"] = failed or "rows padded to the longest (sequence_lens) differ from alone"
                self.mixes = False
                source = str(self.path)
                self.session = _session(source, threads, spin, self.providers)
        if wide_threads < 2 or threads != 1 or CUDA in self.providers or (os.cpu_count() or 1) < 2:
            self.why_not["wide"] = "not asked for, or one core, CUDA, or --ort-threads other than 1"
            return
        wide = _session(source, wide_threads, spin, self.providers)

        def on_wide(tokens, state, lengths=None):
            return self._feed(tokens, state, lengths, session=wide)

        same, failed = _passes(exactness.same_results, self._feed, on_wide, self, self.mixes)
        if same:
            self.wide = wide
        else:
            self.why_not["wide"] = failed or f"{wide_threads} intra-op threads change the results"

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
        got_in = {i.name: i.shape for i in self.session.get_inputs() if i.name != LENS or not self.mixes}
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

    def wide_for(self, rows: int, width: int) -> bool:
        """Whether a call of ``rows`` rows, the longest ``width`` tokens, goes to the two-thread session."""
        return self.wide is not None and rows >= WIDE_MIN_ROWS and width <= WIDE_MAX_T

    def run(self, tokens: np.ndarray, state: Tuple[np.ndarray, ...],
            lengths: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Tuple[np.ndarray, ...]]:
        """tokens [B,T] int64, state ([L,B,H] float32, ...) -> logits [B,T,V], new state.

        ``lengths`` [B] int32 (only when ``mixes``): row b's tokens are its first lengths[b];
        its logits past them are meaningless and its new state is the one after them."""
        b, t = tokens.shape
        if b == 1 and not self.lone_exact:  # as two copies of itself: exactly what it gets in a batch
            twice = tuple(np.concatenate([part, part], axis=1) for part in state)
            logits, new = self.run(np.concatenate([tokens, tokens]), twice,
                                   None if lengths is None else np.concatenate([lengths, lengths]))
            return logits[:1], tuple(part[:, :1] for part in new)
        return self._feed(tokens, state, lengths, session=self.wide if self.wide_for(b, t) else None)

    def _feed(self, tokens: np.ndarray, state: Tuple[np.ndarray, ...], lengths: Optional[np.ndarray] = None,
              session: Optional[ort.InferenceSession] = None) -> Tuple[np.ndarray, Tuple[np.ndarray, ...]]:
        """One call of ``session`` (the serving one by default), as is."""
        feeds = dict(zip(self._inputs, (tokens, *state)))
        if self.mixes:
            feeds[LENS] = np.full(len(tokens), tokens.shape[1], np.int32) if lengths is None else lengths
        elif lengths is not None and (lengths != tokens.shape[1]).any():
            raise ValueError("rows of different lengths in one call, but this model does not mix them")
        out = (session or self.session).run(self._outputs, feeds)
        return out[0], tuple(out[1:])


def _passes(probe, *args) -> Tuple[bool, str]:
    """A probe's answer, and why it failed when it could not run (the model then serves as before)."""
    try:
        return bool(probe(*args)), ""
    except Exception as exc:  # noqa: BLE001 - a probe that cannot run turns its way of batching off
        return False, f"its probe failed ({type(exc).__name__}: {exc})"


def _session(source: Union[str, bytes], threads: int, spin: bool, providers: List[str]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3  # errors only; CUDA fallback is reported by the caller
    return ort.InferenceSession(source, sess_options=options, providers=providers)


def _is_fp16(card: ModelCard, precision: str) -> bool:
    info = card.precisions.get(precision, {})
    return precision == "fp16" or str(info.get("dtype", "")).lower() in ("fp16", "float16")
