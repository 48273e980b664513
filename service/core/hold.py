"""A call's hold on a session: its exclusive use while it computes (a stream, a
unary step, a generation, Explain with commit), and the step computed under it
before its commit.

``Hold.run`` computes a step without keeping anything. ``Hold.commit`` makes
its new state the session's state: one synchronous swap, only while the
session is alive and the call still live. ``Hold.release`` ends the hold,
after a commit or without one. The engine owns everything a hold touches
(store, quotas, scheduler): a hold only asks it, through its public methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..api.errors import CallEnded, FailedPrecondition
from ..api.options import StepOptions
from ..api.values import ANYONE, Caller, DeferredCommit, Live, SessionInfo, State, StepResult, always
from .journal import unreachable
from .sessions import Session

if TYPE_CHECKING:
    from .engine import Engine


@dataclass
class Base:
    """Where a call's step starts: the session as it is, or rewound to ``expected_steps``
    (computed from its journal, not applied until the step's commit)."""

    steps: int
    state: State
    last_logprobs: Optional[np.ndarray]
    rewound: bool = False  # below the session's count: the commit rewinds first
    confirmed: bool = False  # expected_steps named the session's count: all before it was seen


@dataclass
class Pending:
    """A step's result before its commit: the new state, and what the caller will be told."""

    result: StepResult
    state: State
    start: bool
    ids: Optional[np.ndarray] = None  # the ids this commit consumes (None: unknown, the journal is dropped)
    base: Optional[Base] = None
    call_start: bool = True  # the first commit of a call (a Generate's later tokens are not)
    # Its OK is already on its way (a front's one-way commit): the lease was proven when the step
    # ran (Hold.run), so the commit no longer asks (core/engine.py commit_state).
    acknowledged: bool = False


class Hold:
    """A session held by one call. A scratch hold (no session) scores from the zero state
    and commits nothing."""

    def __init__(self, engine: "Engine", session: Optional[Session], end_on_release: bool = False,
                 caller: Caller = ANYONE, stream: bool = False, session_id: str = "",
                 yielding: bool = False) -> None:
        self.engine = engine
        self.session = session
        self.end_on_release = end_on_release
        self.caller = caller
        self.stream = stream  # counts against the caller's open streams until released
        self.state: State = session.state if session else engine.zeros
        self.steps = session.steps if session else 0
        self.released = False
        # A yielding hold (a KServe stream's sequence, kept between its requests) gives its
        # session up when another call asks for it between two steps, and takes it again at
        # its next step, as a hold of its own would (SessionBusy, NotFound if that fails).
        self.session_id = session_id  # as the caller named it: what taking it again looks up
        self.yielded = False  # given up: no session held until the next run takes it again
        self.stepping = False  # from a run until its commit: never given up in between
        if yielding and session is not None:
            session.yielder = self.give_up

    @property
    def has_session(self) -> bool:
        return self.session is not None

    @property
    def info(self) -> SessionInfo:
        if self.session is None:
            raise FailedPrecondition("a stateless call has no session")
        return self.engine.info(self.session, self.caller)

    async def run(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                  expected_steps: Optional[int] = None, base: Optional[Base] = None) -> Pending:
        """Run one step from the session's state (zero state with ``start``); nothing is committed yet."""
        self.stepping = True
        try:
            if self.yielded:
                await self._take_again()
            return await self._run(ids, options, start, expected_steps, base)
        except BaseException:
            self.stepping = False
            raise

    async def _run(self, ids: np.ndarray, options: StepOptions, start: bool,
                   expected_steps: Optional[int], base: Optional[Base]) -> Pending:
        engine, session = self.engine, self.session
        at: Optional[Base] = None
        if session is not None:
            engine.require_live(session)
            engine.check_reply(len(ids), options)
            at = base if base is not None else await self.base(expected_steps)
        else:
            engine.check_reply(len(ids), options)
        engine.take_tokens(self.caller, len(ids))
        fresh = start or at is None
        scores, state = await engine.compute(ids, engine.zeros if fresh or at is None else at.state, options)
        n = len(ids)
        steps = 0 if fresh or at is None else at.steps
        pending = Pending(StepResult(session.id if session else "", steps + n, n, scores, options), state, start,
                          ids, at)
        if session is not None:  # the lease proven (and, write-through, the step in Redis) before its commit
            await engine.before_commit(session, pending)
        return pending

    def give_up(self) -> None:
        """Another call asks for the session: let it go now unless a step is between its run and
        its commit (then the asker finds it busy, as it would any held session)."""
        session = self.session
        if self.stepping or self.released or self.yielded or session is None:
            return
        session.yielder = None
        self.yielded = True
        self.engine.release_hold(self)

    async def _take_again(self) -> None:
        """After a give-up: hold the session again (loaded, moved back, or refused as any hold is)."""
        session = await self.engine.take_session(self.session_id, self.caller)
        self.session, self.yielded = session, False
        self.state, self.steps = session.state, session.steps
        session.yielder = self.give_up

    async def base(self, expected_steps: Optional[int]) -> Base:
        """The session as this call's step will find it: as it is, or rewound to ``expected_steps``
        (inside its journal; FAILED_PRECONDITION with the reachable range if not)."""
        session = self.session
        assert session is not None, "a scratch hold has no session"
        if expected_steps is None or expected_steps == session.steps:
            return Base(session.steps, session.state, session.last_logprobs, confirmed=expected_steps is not None)
        journal = session.journal
        if journal is None or not journal.reaches(expected_steps, session.steps):
            raise unreachable(session.steps, expected_steps, journal, "expected_steps")
        state, last = await self.engine.replay(journal, expected_steps)
        return Base(expected_steps, state, last, rewound=True)

    async def read_state(self) -> State:
        """The session's state as this hold found it (the same call across the engine link)."""
        return self.state

    def commit(self, pending: Pending, live: Live = always) -> StepResult:
        """Make the step's state the session's state, if the call is still live; CallEnded
        (nothing committed) if not."""
        self.stepping = False
        if not live():
            raise CallEnded("the call ended (cancelled or past its deadline) before its result was committed")
        if self.session is not None:
            self.engine.commit_state(self.session, pending.state, pending.result.scores.last,
                                     pending.result.consumed, pending.start, pending)
        return pending.result

    async def step(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                   expected_steps: Optional[int] = None, live: Live = always) -> StepResult:
        return self.commit(await self.run(ids, options, start, expected_steps), live)

    def deferred_commit(self, pending: Pending) -> DeferredCommit:
        """``commit(wanted)``: commit ``pending`` if ``wanted`` (and the session still lives), then
        release the hold; for a call that encodes its reply between the step and the commit."""
        session = self.session
        if session is None:  # stateless: nothing to commit
            self.release()
            return lambda wanted: None

        def commit(wanted: bool) -> None:
            try:
                if wanted and session.alive:
                    self.commit(pending)
            finally:
                self.release()

        return commit

    def end_session(self, why: str) -> None:
        """End the held session (it is gone once the hold is released)."""
        if self.session is not None:
            self.engine.end_session(self.session, why)

    def release(self) -> None:
        """End the hold (once; again is a no-op)."""
        if self.released:
            return
        self.released = True
        session = self.session
        if session is not None and session.yielder == self.give_up:
            session.yielder = None
        if not self.yielded:  # a hold that gave its session up holds nothing more
            self.engine.release_hold(self)
