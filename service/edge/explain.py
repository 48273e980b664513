"""Explain, engine side: run the model's explain graph (model.explain.onnx) on
some tokens from a session's state or the zero state, and cut the result
down to what was asked (layers, channels, units) plus per-token summaries.

The explain graph gets its own onnxruntime session, loaded on first use and
run in its own single worker thread, so the step path (scheduler, batch
runner, their ORT session) never waits for it. A session's state is read as
it is (its arrays are never changed in place, see core/sessions.py); only
``commit`` advances the session, through the engine's ordinary step and its
deferred commit (committed once the reply went out), exactly as Predict does.

It uses the engine only through the contract (api/engine.py), so it runs the
same in a front process. No gRPC here: plain values in, ExplainResult or
ServiceError out.
"""
from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from lstm_service.model.card import ModelCardError

from ..api.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, quote, summary
from ..api.engine import EngineApi
from ..api.values import ANYONE, Caller, DeferredCommit
from ..api.options import StepOptions

MAX_EXPLAIN_TOKENS = 512
MAX_VALUES = 262144  # floats in one reply: 1 MiB of values
MAX_WAITING = 8  # explain calls queued for the worker thread; beyond it RESOURCE_EXHAUSTED
DEFAULT_TOP_K = 5
BYTES_PER_VALUE = 5  # a packed float and its share of framing
BYTES_PER_CANDIDATE = 24  # token, prob, logprob, piece, text and framing of one Candidate


@dataclass(frozen=True)
class Selection:
    """What to return: layer indices, channel names, and units (all, a range, or top-k by spread)."""

    layers: Tuple[int, ...]
    channels: Tuple[str, ...]
    unit_range: Optional[Tuple[int, int]]  # [start, end)
    top_units: int  # 0: not asked
    top_k: int  # candidates per token

    @property
    def units_per_channel(self) -> int:
        if self.unit_range:
            return self.unit_range[1] - self.unit_range[0]
        return self.top_units


@dataclass
class ChannelView:
    name: str
    units: np.ndarray  # [U] int
    values: np.ndarray  # [T, U] float32


@dataclass
class LayerView:
    layer: int
    mean_forget: np.ndarray  # [T], empty for rnn
    mean_input: np.ndarray  # [T], empty for rnn
    state_change: np.ndarray  # [T]
    channels: List[ChannelView]


@dataclass
class ExplainResult:
    session_id: str
    steps: int
    committed: bool
    tokens: np.ndarray  # [T] int64
    top_ids: np.ndarray  # [T, k]
    top_logprobs: np.ndarray  # [T, k]
    layers: List[LayerView]
    available_channels: Tuple[str, ...]


class Explainer:
    """One per engine (``for_engine``): the explain graph's session and the Explain call."""

    def __init__(self, engine: EngineApi) -> None:
        # A weak reference: for_engine's table is keyed weakly by the engine, and a value
        # holding its key strongly would keep every engine (and its ORT sessions) alive.
        self._engine = weakref.ref(engine)
        card = engine.card
        self.layers, self.hidden = card.layers, card.hidden_size
        self.channels: Tuple[str, ...] = tuple(card.explain.get("channels", ()))
        self.state_inputs = [f"{name}0" for name in card.state_names]
        self._session = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="explain")
        self.waiting = 0

    @property
    def engine(self):
        return self._engine()

    # -- validation (before anything runs) ----------------------------------
    def selection(self, layers: Sequence[int], channels: Sequence[str], unit_range: Optional[Tuple[int, int]],
                  top_units: Optional[int], top_k: Optional[int], n_tokens: int) -> Selection:
        if not self.channels:
            raise FailedPrecondition(f"model {self.engine.card.name!r} was exported without an explain graph "
                                     "(model.explain.onnx); re-export it to use Explain", reason="NO_EXPLAIN_GRAPH")
        L, H, V = self.layers, self.hidden, self.engine.vocab.size
        bad_layers = [x for x in layers if not 0 <= x < L]
        if bad_layers or len(set(layers)) != len(layers):
            offenders = bad_layers or _repeats(layers)
            what = "out of range" if bad_layers else "repeated"
            raise InvalidArgument(f"layers {summary(offenders)} {what}: allowed distinct layer indices 0 to {L - 1}, "
                                  f"at most {L} of them (empty: all)", field="layers")
        unknown = [c for c in channels if c not in self.channels]
        if unknown or len(set(channels)) != len(channels):
            what = f"channel {quote(unknown[0])} is unknown" if unknown else "channels repeat"
            raise InvalidArgument(f"{what}: ask for distinct names among {', '.join(self.channels)} (empty: all)",
                                  field="channels")
        if unit_range is not None and not 0 <= unit_range[0] < unit_range[1] <= H:
            raise InvalidArgument(f"unit_range [{unit_range[0]}, {unit_range[1]}) not allowed: "
                                  f"0 <= start < end <= {H}", field="unit_range")
        if top_units is not None and not 1 <= top_units <= H:  # None: not asked
            raise InvalidArgument(f"top_units {top_units} not allowed: 1 to {H} (leave it unset for every unit)",
                                  field="top_units")
        k = DEFAULT_TOP_K if top_k is None else top_k
        if not 0 <= k <= V:
            raise InvalidArgument(f"top_k {k} is out of range: allowed 0 to {V}", field="top_k")
        if n_tokens > MAX_EXPLAIN_TOKENS:
            raise InvalidArgument(f"input has {n_tokens} tokens; Explain allows 1 to {MAX_EXPLAIN_TOKENS}",
                                  field="input")
        chosen = Selection(tuple(layers) or tuple(range(L)), tuple(channels) or self.channels, unit_range,
                           top_units or 0, k)
        self._check_size(chosen, n_tokens)
        return chosen

    def _check_size(self, s: Selection, n_tokens: int) -> None:
        """Refuse, before running, a reply over MAX_VALUES values or over --max-reply-bytes."""
        units = s.units_per_channel or self.hidden
        values = n_tokens * len(s.layers) * len(s.channels) * units
        max_bytes = self.engine.config.max_reply_bytes
        limit = min(MAX_VALUES, max_bytes // (2 * BYTES_PER_VALUE))
        if values > limit:
            raise InvalidArgument(
                f"the reply would hold {n_tokens} tokens x {len(s.layers)} layers x {len(s.channels)} channels "
                f"x {units} units = {values} values; allowed at most {limit}: ask for fewer layers, channels or "
                "units (unit_range, top_units) or fewer tokens", field="input", reason="REPLY_TOO_LARGE")
        candidates = n_tokens * s.top_k * BYTES_PER_CANDIDATE
        if candidates + values * BYTES_PER_VALUE > max_bytes:
            raise InvalidArgument(
                f"{n_tokens} tokens x top_k {s.top_k} candidates and {values} values would exceed the reply limit "
                f"of {max_bytes} bytes (--max-reply-bytes): ask for a smaller top_k or fewer tokens",
                field="top_k", reason="REPLY_TOO_LARGE")

    # -- running ----------------------------------------------------------------
    def _load(self):
        import onnxruntime as ort

        try:
            path = self.engine.card.verify_explain()
        except ModelCardError as exc:
            raise FailedPrecondition(str(exc), reason="NO_EXPLAIN_GRAPH") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # beside the step path, never competing with it for cores
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _run(self, ids: np.ndarray, state: Tuple[np.ndarray, ...]):
        session = self._session
        if session is None:
            session = self._session = self._load()
        feeds = {"tokens": ids[None, :]}
        feeds.update({name: np.ascontiguousarray(part[:, None, :]) for name, part in zip(self.state_inputs, state)})
        outputs = session.run(None, feeds)
        return outputs[0][0], outputs[-1][:, 0]  # logits [T,V], trace [L,T,K,H]

    async def run(self, ids: np.ndarray, state: Tuple[np.ndarray, ...]):
        if self.waiting >= MAX_WAITING:
            raise ResourceExhausted(f"{self.waiting} Explain calls are already waiting; retry shortly",
                                    retry_after_ms=200)
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, self._run, ids, state)
        finally:
            self.waiting -= 1

    async def explain(self, session_id: str, ids: np.ndarray, selection: Selection, commit: bool = False,
                      caller: Caller = ANYONE) -> Tuple[ExplainResult, DeferredCommit]:
        """From the session's state (zero state without one), and ``commit(wanted)``.

        Without ``commit`` nothing changes and ``commit(wanted)`` does nothing. With it, the tokens
        are stepped like a unary Predict and committed when the caller calls ``commit(True)``
        (its reply is encoded and the call still live), as with engine.predict_deferred. Only the
        caller's own sessions can be explained (another principal's do not exist for it).
        """
        engine = self.engine
        if commit and not session_id:
            raise InvalidArgument("commit needs a session: name one (session_id or x-session-id)", field="commit")
        if not commit:
            state, steps = await self._read_state(session_id, len(ids), caller)
            await engine.charge_tokens(len(ids), caller)  # the model runs them as a step would (with
            logits, trace = await self.run(ids, state)     # commit, the step below charges them, once)
            return self._result(session_id, steps, False, ids, logits, trace, state, selection), _nothing
        # One hold: the explain and the step see one state.
        hold = await engine.hold(session_id, caller)
        try:
            state = await hold.read_state()
            logits, trace = await self.run(ids, state)
            pending = await hold.run(ids, StepOptions(top_k=0))
        except BaseException:
            hold.release()
            raise
        result = self._result(session_id, pending.result.steps, True, ids, logits, trace, state, selection)
        return result, hold.deferred_commit(pending)

    async def _read_state(self, session_id: str, n_tokens: int, caller: Caller) -> Tuple[Tuple[np.ndarray, ...], int]:
        """(state, steps) of the caller's session, read-only (no hold, no touch), loaded from
        its snapshot record if this replica lacks it; the zero state without a session."""
        if not session_id:
            return self.engine.zeros, n_tokens
        steps, state = await self.engine.read_state(session_id, caller)
        return state, steps

    # -- cutting down ---------------------------------------------------------------
    def _result(self, session_id, steps, committed, ids, logits, trace, state, s: Selection) -> ExplainResult:
        logprobs = logits - _logsumexp(logits)
        top = np.argsort(-logprobs, axis=1, kind="stable")[:, : s.top_k]
        layers = [self._layer(layer, trace[layer], state, s) for layer in s.layers]
        return ExplainResult(session_id, steps, committed, ids, top, np.take_along_axis(logprobs, top, 1),
                             layers, self.channels)

    def _layer(self, layer: int, trace: np.ndarray, state, s: Selection) -> LayerView:
        """trace [T,K,H] of one layer -> its summaries and chosen channels."""
        names = self.channels
        state_part = "c" if "c" in names else "h"
        start = state[self.engine.card.state_names.index(state_part)][layer]  # its value before the first token
        seq = trace[:, names.index(state_part)]
        change = np.linalg.norm(np.diff(np.concatenate([start[None], seq]), axis=0), axis=1)
        if "forget" in names:
            forget, write = trace[:, names.index("forget")].mean(1), trace[:, names.index("input")].mean(1)
        elif "update" in names:  # GRU: z keeps h, 1 - z writes the candidate
            forget = trace[:, names.index("update")].mean(1)
            write = 1.0 - forget
        else:
            forget = write = np.zeros(0, np.float32)
        channels = [self._channel(name, trace[:, names.index(name)], s) for name in s.channels]
        return LayerView(layer, forget, write, change.astype(np.float32), channels)

    def _channel(self, name: str, values: np.ndarray, s: Selection) -> ChannelView:
        """values [T,H] -> the chosen units' columns."""
        if s.unit_range:
            units = np.arange(*s.unit_range)
        elif s.top_units:
            # Most varying over these tokens first; ties (e.g. one token) by mean magnitude.
            spread, size = values.std(0), np.abs(values).mean(0)
            units = np.lexsort((-size, -spread))[: s.top_units]
        else:
            units = np.arange(values.shape[1])
        return ChannelView(name, units, np.ascontiguousarray(values[:, units]))

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def _repeats(values: Sequence) -> list:
    """The values that occur more than once, each once, in first-repeat order."""
    seen: set = set()
    repeated: dict = {}
    for value in values:
        if value in seen:
            repeated.setdefault(value, None)
        seen.add(value)
    return list(repeated)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=1, keepdims=True))


def _nothing(delivered: bool) -> None:
    """commit(wanted) of a call that commits nothing."""


_EXPLAINERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def for_engine(engine: EngineApi) -> Explainer:
    """The engine's one Explainer (made on first use; its ORT session loads on the first call)."""
    explainer = _EXPLAINERS.get(engine)
    if explainer is None:
        explainer = _EXPLAINERS[engine] = Explainer(engine)
    return explainer
