"""A session held by one writer (a stream, a unary step, a generation), and the
results a step produces before and after its commit.

``Lease.run`` computes a step without keeping anything: a long input runs in
chunks of at most ``--prefill-chunk`` tokens, each its own model call, so
other sessions' steps are batched in between instead of queueing behind one
huge call. ``Lease.commit`` keeps the result: one synchronous swap, only
while the session is alive and the call still wanted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional

import numpy as np

from ..api import options as opts
from .batch_runner import StepRequest
from ..api.errors import FailedPrecondition, ServiceError
from ..edge.identity import ANYONE, Caller
from ..api.options import StepOptions
from .scoring import Scores
from .sessions import Session, SessionInfo, State

if TYPE_CHECKING:
    from .engine import Engine

Live = Callable[[], bool]  # is the call still wanted? (not cancelled, deadline not passed)


def always() -> bool:
    return True


class CallEnded(ServiceError):
    """The call was cancelled or ran out of time before its result could be committed."""

    code = "CANCELLED"
    default_reason = "CALL_ENDED"


@dataclass
class StepResult:
    session_id: str
    steps: int  # the session's steps after this one
    consumed: int
    scores: Scores
    options: StepOptions

    @property
    def first_position(self) -> int:
        return self.consumed - len(self.scores.top_ids)


@dataclass
class Pending:
    """A step's result before its commit: the new state, and what the caller will be told."""

    result: StepResult
    state: State
    start: bool


@dataclass
class Generated:
    token: int
    piece: bytes
    text: str
    logprob: float
    steps: int
    finish: Optional[str]  # None until the last: "length" | "stop"


class Lease:
    """A session held by one writer: a stream, a unary step or a generation.
    A scratch lease (no session) scores from the zero state and keeps nothing."""

    def __init__(self, engine: "Engine", session: Optional[Session], end_on_release: bool = False,
                 caller: Caller = ANYONE, stream: bool = False) -> None:
        self.engine = engine
        self.session = session
        self.end_on_release = end_on_release
        self.caller = caller
        self.stream = stream  # counts against the caller's open streams until released
        self.state: State = session.state if session else engine.store.zeros
        self.steps = session.steps if session else 0

    @property
    def info(self) -> SessionInfo:
        if self.session is None:
            raise FailedPrecondition("a stateless call has no session")
        return self.engine.info(self.session, self.caller)

    async def run(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                  expected_steps: Optional[int] = None) -> Pending:
        """Run one step from the session's state (zero state with ``start``); nothing is kept yet."""
        engine, session = self.engine, self.session
        if session is not None:
            engine.store.require_live(session)
            self.check_expected(expected_steps)
        opts.check_reply(len(ids), options, engine.vocab.size, engine.config.max_reply_bytes,
                        engine.vocab.max_piece_bytes)
        engine.quotas.take_tokens(self.caller.principal, len(ids))
        state = engine.store.zeros if start or session is None else session.state
        base = 0 if start or session is None else session.steps
        began = time.perf_counter()
        scores, state = await self._chunks(ids, state, options)
        if engine.metrics:
            engine.metrics.step(time.perf_counter() - began)
        n = len(ids)
        result = StepResult(session.id if session else "", base + n, n, scores, options)
        return Pending(result, state, start)

    async def _chunks(self, ids: np.ndarray, state: State, options: StepOptions):
        """Run ``ids`` in chunks of at most --prefill-chunk tokens, carrying the state; the
        scores of every position (all_positions) or of the last chunk's last position."""
        chunk = self.engine.config.prefill_chunk or len(ids)
        submit = self.engine.scheduler.submit
        if len(ids) <= chunk:
            out = await submit(StepRequest(ids, state, options.all_positions, options.top_k))
            return out.scores, out.state
        parts: List[Scores] = []
        for begin in range(0, len(ids), chunk):
            last = begin + chunk >= len(ids)
            wanted = options.all_positions or last  # earlier chunks only carry the state on
            out = await submit(StepRequest(ids[begin:begin + chunk], state, options.all_positions,
                                           options.top_k if wanted else 0))
            state = out.state
            if wanted:
                parts.append(out.scores)
        if len(parts) == 1:
            return parts[0], state
        join = lambda field: np.concatenate([getattr(p, field) for p in parts])  # noqa: E731
        return Scores(join("logprobs"), parts[-1].last, join("top_ids"), join("top_logprobs"), join("top_probs")), state

    async def read_state(self) -> State:
        """The session's state as this lease found it (the same call across the engine link)."""
        return self.state

    def check_expected(self, expected_steps: Optional[int]) -> None:
        if expected_steps is not None and self.session is not None and self.session.steps != expected_steps:
            steps = self.session.steps
            raise FailedPrecondition(
                f"expected_steps is {expected_steps} but the session has consumed {steps} tokens; nothing was "
                "applied (after a lost reply: the earlier attempt applied if steps moved on by its tokens)",
                reason="STEPS_MISMATCH", metadata={"steps": str(steps)}, field="expected_steps",
            )

    def commit(self, pending: Pending, live: Live = always) -> StepResult:
        """Keep the step's state, if the call is still live; CallEnded (nothing kept) if not."""
        if not live():
            raise CallEnded("the call ended (cancelled or past its deadline) before its result was committed")
        session = self.session
        if session is not None:
            store = self.engine.store
            store.require_live(session)
            if pending.start:
                store.clear(session)
            store.commit(session, pending.state, pending.result.scores.last, pending.result.consumed)
            self.engine.committed(session)
        return pending.result

    async def step(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                   expected_steps: Optional[int] = None, live: Live = always) -> StepResult:
        return self.commit(await self.run(ids, options, start, expected_steps), live)

    def end(self, why: str) -> None:
        if self.session is not None:
            self.engine.store.close(self.session, why)

    def release(self) -> None:
        engine = self.engine
        if self.stream:
            engine.quotas.close_stream(self.caller.principal)
            self.stream = False
        if self.session is None:
            engine.scratch_active -= 1
            return
        engine.store.release(self.session)
        if self.end_on_release:
            engine.store.close(self.session, "ended with its stream")
