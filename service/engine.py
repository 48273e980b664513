"""The serving core, free of gRPC, and the one owner of session state.

server.py decodes a request into plain values, calls one method here and
encodes what comes back; it never sees the session store, only
SessionInfo records and results. Inside, the store holds each session's
state, the scheduler batches steps across sessions, and the batch runner
runs them through onnxruntime.

Every state change happens in one synchronous commit after the model result
arrived and only while the caller says the call is still live, so anything
that fails, is rejected, times out or is cancelled earlier leaves the
session exactly as it was. A stream step and each generated token are
committed as their reply is handed to the transport, so a client never receives a
result its session does not hold; a unary step is committed once its reply went out
before the deadline (``predict_deferred``).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import options as opts
from .batch_runner import BatchRunner, StepRequest
from .errors import FailedPrecondition, ServiceError
from .options import GenerateOptions, StepOptions
from .sampling import Sampler
from .scheduler import Scheduler
from .scoring import Scores
from .sessions import Session, SessionInfo, SessionStore, State
from .vocab import Vocab

Live = Callable[[], bool]  # is the call still wanted? (not cancelled, deadline not passed)
SETTLE_WAIT_SECONDS = 1.0  # how long a writer waits for the previous reply's commit to settle


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

    def __init__(self, engine: "Engine", session: Optional[Session], end_on_release: bool = False) -> None:
        self.engine = engine
        self.session = session
        self.end_on_release = end_on_release
        self.state: State = session.state if session else engine.store.zeros
        self.steps = session.steps if session else 0

    @property
    def info(self) -> SessionInfo:
        if self.session is None:
            raise FailedPrecondition("a stateless call has no session")
        return self.engine.store.info(self.session)

    async def run(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                  expected_steps: Optional[int] = None) -> Pending:
        """Run one step from the session's state (zero state with ``start``); nothing is kept yet."""
        engine, session = self.engine, self.session
        if session is not None:
            engine.store.require_live(session)
            self.check_expected(expected_steps)
        opts.check_reply(len(ids), options, engine.vocab.size, engine.config.max_reply_bytes)
        state = engine.store.zeros if start or session is None else session.state
        base = 0 if start or session is None else session.steps
        began = time.perf_counter()
        out = await engine.scheduler.submit(StepRequest(ids, state, options.all_positions, options.top_k))
        if engine.metrics:
            engine.metrics.step(time.perf_counter() - began)
        n = len(ids)
        result = StepResult(session.id if session else "", base + n, n, out.scores, options)
        return Pending(result, out.state, start)

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
        return pending.result

    async def step(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                   expected_steps: Optional[int] = None, live: Live = always) -> StepResult:
        return self.commit(await self.run(ids, options, start, expected_steps), live)

    def end(self, why: str) -> None:
        if self.session is not None:
            self.engine.store.close(self.session, why)

    def release(self) -> None:
        engine = self.engine
        if self.session is None:
            engine.scratch_active -= 1
            return
        engine.store.release(self.session)
        if self.end_on_release:
            engine.store.close(self.session, "ended with its stream")


class Engine:
    def __init__(self, config, card, runtime, metrics=None, clock=time.monotonic, on_event=None) -> None:
        self.config = config
        self.card = card
        self.runtime = runtime  # what is served (precision, providers), for model descriptions
        self.metrics = metrics
        self.vocab = Vocab(card.vocab_kind, card.vocab_size)
        self.store = SessionStore(
            runtime.zero_state, max_sessions=config.max_sessions, default_ttl=config.session_ttl,
            max_ttl=config.max_session_ttl, clock=clock, on_event=on_event,
        )
        self.runner = BatchRunner(runtime, config.max_batch, metrics)
        self.scheduler = Scheduler(
            self.runner, config.max_batch_delay_ms, config.queue_size, config.inline_max_ms, self.active, metrics
        )
        self.scratch_active = 0  # stateless calls in flight

    def active(self) -> int:
        """Callers that may be sending steps now: held sessions and stateless calls."""
        return self.store.busy + self.scratch_active

    # -- validation (before anything runs) -------------------------------------
    def tokens(self, tokens: Sequence[int], text: str, what: str = "input") -> np.ndarray:
        return self.vocab.encode(tokens, text, self.config.max_tokens_per_message, what)

    def step_options(self, top_k: Optional[int], all_positions: bool, logprobs: bool) -> StepOptions:
        return opts.step_options(top_k, all_positions, logprobs, self.vocab.size)

    def generate_options(self, max_tokens: int, temperature: Optional[float], top_k: int, top_p: Optional[float],
                         seed: Optional[int], stop: Sequence[str]) -> GenerateOptions:
        return opts.generate_options(max_tokens, temperature, top_k, top_p, seed, stop, self.vocab.size,
                                     self.config.max_generate_tokens)

    # -- holding sessions --------------------------------------------------------
    async def hold_settled(self, session_id: str, end_on_release: bool = False) -> Lease:
        """``hold``, but first wait (briefly) for a unary reply's pending commit on the session:
        a client that got its reply may send the next step before the server heard the
        reply was delivered (see ``defer``)."""
        session = self.store._sessions.get(session_id) if session_id else None
        if session is not None and session.settling is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(session.settling), SETTLE_WAIT_SECONDS)
        return self.hold(session_id, end_on_release)

    def hold(self, session_id: str, end_on_release: bool = False) -> Lease:
        """A lease on the session (SessionBusy if another writer has it); empty id: a scratch lease."""
        if not session_id:
            self.scratch_active += 1
            return Lease(self, None)
        return Lease(self, self.store.acquire(session_id), end_on_release)

    async def open_stream(self, session_id: str, create: bool, ttl: float, end_with_stream: bool) -> Lease:
        """Attach a stream to a session, creating it first when asked."""
        if create:
            session = self.store.create(session_id or None, ttl)
            return Lease(self, self.store.acquire(session.id), end_with_stream)
        return await self.hold_settled(session_id, end_with_stream)

    # -- one-shot calls ------------------------------------------------------------
    async def predict(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                      expected_steps: Optional[int] = None, live: Live = always) -> StepResult:
        lease = await self.hold_settled(session_id)
        try:
            return await lease.step(ids, options, start, expected_steps, live)
        finally:
            lease.release()

    async def predict_deferred(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                               expected_steps: Optional[int] = None) -> Tuple[StepResult, Callable[[bool], None]]:
        """Run a step and hand back its result and ``settle(delivered)``, to be called once
        the transport knows whether the reply reached the client: the step is kept only
        then (a unary reply that the deadline overtook on its way changes nothing). The
        session stays held until settled; the next writer waits for that (``hold_settled``)."""
        lease = await self.hold_settled(session_id)
        try:
            pending = await lease.run(ids, options, start, expected_steps)
        except BaseException:
            lease.release()
            raise
        return pending.result, self.defer(lease, pending)

    def defer(self, lease: Lease, pending: Pending) -> Callable[[bool], None]:
        session = lease.session
        if session is None:  # stateless: nothing to keep
            lease.release()
            return lambda delivered: None
        session.settling = asyncio.get_running_loop().create_future()

        def settle(delivered: bool) -> None:
            try:
                if delivered and session.alive:
                    lease.commit(pending)
            finally:
                future, session.settling = session.settling, None
                lease.release()
                if future is not None and not future.done():
                    future.set_result(None)

        return settle

    async def create(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                     options: StepOptions, live: Live = always) -> Tuple[SessionInfo, Optional[StepResult]]:
        """A new session, prefilled with ``prompt`` in one model call if given. Nothing is
        created unless the whole call succeeds (no orphan whose id the client never learns)."""
        store = self.store
        if prompt is None:
            return store.info(store.create(session_id, ttl)), None
        store.check_ttl(ttl)
        if session_id:
            store.check_new_id(session_id)
        scratch = self.hold("")
        try:
            pending = await scratch.run(prompt, options)
        finally:
            scratch.release()
        if not live():
            raise CallEnded("the call ended (cancelled or past its deadline) before the session was created")
        session = store.create(session_id, ttl)  # raises before anything is kept
        store.commit(session, pending.state, pending.result.scores.last, len(prompt))
        pending.result.session_id = session.id
        return store.info(session), pending.result

    async def generate(self, session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions,
                       expected_steps: Optional[int] = None) -> AsyncIterator[Generated]:
        """Sample tokens one at a time. Each token is committed (with the prompt, for the
        first) as it is handed to the consumer, and sampling stops as soon as the consumer
        does: the session holds the tokens handed out, so every token a client receives
        is in it; a token whose write was cut off by a cancel may be in it too.

        Use with ``contextlib.aclosing`` so the session is released on cancel.
        """
        lease = await self.hold_settled(session_id)
        try:
            lease.check_expected(expected_steps)
            logprobs = lease.session.last_logprobs if lease.session else None
            if prompt is None and logprobs is None:
                raise FailedPrecondition(
                    "nothing to continue from: the session has consumed no token yet; send a prompt"
                    if session_id else "a prompt is required when generating without a session",
                    reason="NO_CONTEXT", field="prompt",
                )
            pending = await lease.run(prompt, StepOptions(top_k=0)) if prompt is not None else None
            async for item in self._sample(lease, pending, logprobs, options):
                yield item
        finally:
            lease.release()

    async def _sample(self, lease: Lease, pending: Optional[Pending], logprobs, options: GenerateOptions):
        sampler, decoder = Sampler(options.sampling), self.vocab.decoder()
        tail, keep = bytearray(), max((len(s) for s in options.stop), default=0)  # for stop sequences
        state = pending.state if pending else lease.state
        steps = pending.result.steps if pending else lease.steps
        logprobs = pending.result.scores.last if pending else logprobs
        unsent = pending.result.consumed if pending else 0  # prompt tokens to commit with the first token
        one = StepOptions(top_k=0)
        for i in range(options.max_tokens):
            token = sampler.sample(logprobs)
            ids = np.array([token], dtype=np.int64)
            out = await self.scheduler.submit(StepRequest(ids, state, False, 0))
            piece = self.vocab.pieces[token]
            finish = "length" if i + 1 == options.max_tokens else None
            if keep:
                tail += piece
                del tail[:-keep]
                if any(tail.endswith(s) for s in options.stop):
                    finish = "stop"
            # Keep the token (and the prompt, the first time) as it is handed out to be written:
            # a client never receives a token its session does not hold.
            lease.commit(Pending(StepResult("", steps + 1, unsent + 1, out.scores, one), out.state, start=False))
            yield Generated(token, piece, decoder.feed(token, final=finish is not None),
                            float(logprobs[token]), steps + 1, finish)
            state, steps, logprobs, unsent = out.state, steps + 1, out.scores.last, 0
            if finish:
                return

    # -- session records -------------------------------------------------------------
    def session(self, session_id: str) -> SessionInfo:
        return self.store.info(self.store.get(session_id))

    def reset(self, session_id: str) -> SessionInfo:
        return self.store.info(self.store.reset(session_id))

    def delete(self, session_id: str) -> SessionInfo:
        return self.store.info(self.store.delete(session_id))

    def fork(self, session_id: str, new_id: Optional[str], ttl: float) -> SessionInfo:
        return self.store.info(self.store.fork(session_id, new_id, ttl))

    def sessions(self, limit: int) -> Tuple[List[SessionInfo], int]:
        """The most recently used sessions first, and how many there are."""
        return [self.store.info(s) for s in self.store.list(limit)], len(self.store)

    def snapshot(self, session_id: str) -> Tuple[int, State, Optional[np.ndarray]]:
        """(steps, state, log-probs after the last token) of a session, read-only; it is not held
        and this is no use of it (for explain, export, and tests that compare states bitwise)."""
        session = self.store.get(session_id)
        return session.steps, session.state, session.last_logprobs

    def session_count(self) -> int:
        return len(self.store)

    def reap(self) -> int:
        return self.store.reap()

    def close(self) -> None:
        self.scheduler.close()
