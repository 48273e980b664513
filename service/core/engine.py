"""The serving core, free of gRPC, and the one owner of session state.

The edge (service/edge/) decodes a request into plain values, calls one
operation of the contract (api/engine.py) and encodes what comes back; it
never sees the session store, only SessionInfo records and results. Inside, the store holds each session's
state, the scheduler batches steps across sessions, and the batch runner
runs them through onnxruntime.

Every state change happens in one synchronous commit after the model result
arrived and only while the caller says the call is still live, so anything
that fails, is rejected, times out or is cancelled earlier leaves the
session exactly as it was. A stream step and each generated token are
committed as their reply is handed to the transport, so a client never receives a
result its session does not hold; a unary step is committed once its reply went out
before the deadline (``predict_deferred``).

A call's hold on a session (core/hold.py) asks this engine for everything it
touches, through the public methods under "for holds" below.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, AsyncIterator, Optional, Tuple

import numpy as np

from ..api import options as opts
from ..api.engine_base import CreateCommit, EngineBase, RecordCommit
from ..api.options import GenerateOptions, StepOptions
from ..api.values import ANYONE, Caller, DeferredCommit, Generated, Remembrance, Scores, SessionInfo, State, StepResult
from ..persist.durability import Durability
from .batch_runner import BatchRunner, StepOutput, StepRequest
from .generation import generate
from .hold import Hold, Pending
from .prefill import run_chunked
from .quotas import Quotas, StreamSlot
from .scheduler import Scheduler
from .session_ids import SessionName, address, is_valid, new_session_id
from .journal import Journal, Journals
from .request_ledger import AnswersKept, RequestLedger
from .session_leases import SessionLeases
from .session_records import SessionRecords
from .sessions import Session, SessionStore
from .vocab import served_vocab

if TYPE_CHECKING:
    from ..persist.snapshots import SnapshotStore

log = logging.getLogger("service.engine")


class Engine(AnswersKept, SessionRecords, SessionLeases, EngineBase):
    # Request ids' commits, the records' deferred halves, the leases' part, then the base's
    # stubs (AnswersKept wraps the records' commits: it comes first).
    def __init__(self, config, card, runtime, metrics=None, clock=time.monotonic, on_event=None) -> None:
        super().__init__(config, card, served_vocab(card))
        self.runtime = runtime  # what is served (precision, providers), for model descriptions
        self.metrics = metrics
        self._on_event = on_event
        self.store = SessionStore(
            runtime.zero_state, max_sessions=config.max_sessions, default_ttl=config.session_ttl,
            max_ttl=config.max_session_ttl, clock=clock, on_event=self._session_event,
        )
        self.quotas = Quotas(config.max_sessions_per_principal, config.max_streams_per_principal,
                             config.tokens_per_second_per_principal,
                             max(config.max_tokens_per_message, int(config.tokens_per_second_per_principal)))
        self.model_sha256 = str(card.precisions.get(runtime.precision, {}).get("sha256", ""))
        self.durability: Optional[Durability] = None  # with --state-store (attach_snapshots)
        self.runner = BatchRunner(runtime, config.max_batch, metrics)
        self.scheduler = Scheduler(
            self.runner, config.max_batch_delay_ms, config.queue_size, config.inline_max_ms, self.active, metrics
        )
        self.scratch_active = 0  # stateless calls in flight
        per_call = config.max_tokens_per_message + config.max_generate_tokens  # a prompt and a Generate
        self.journals = Journals(config.journal_calls * per_call, per_call)
        self.ledger = RequestLedger(clock)  # request ids' answers (AIP-155), shared by every front

    def _session_event(self, kind: str, session: Session, why: str) -> None:
        if self.durability is not None:
            self.durability.on_event(kind, session)
        if self._on_event is not None:
            self._on_event(kind, session, why)

    # -- the snapshot store (with --state-store): held by Durability alone -----------------
    def attach_snapshots(self, snapshots: "SnapshotStore", url: str = "") -> None:
        """Write sessions' snapshot records to ``snapshots`` and resume from them; with the
        store's ``url``, hold each session under a lease (one owner across replicas) and hand
        sessions over between replicas (persist/leases.py, persist/handoff.py)."""
        c = self.config
        leases = handoff = None
        if url:
            from ..persist.handoff import Handoff
            from ..persist.leases import Leases

            leases = Leases(snapshots.redis, c.replica_id, c.lease_ms)
            handoff = Handoff(url, leases, self.hand_over)
        self.durability = Durability(self.store, snapshots, self.model_sha256, c.snapshot_every,
                                     c.snapshot_idle_seconds, leases, handoff)

    @property
    def store_healthy(self) -> Optional[bool]:
        """The snapshot store's health; None without one."""
        return None if self.durability is None else self.durability.healthy

    @property
    def zeros(self) -> State:
        return self.store.zeros

    def active(self) -> int:
        """Callers that may be sending steps now: held sessions and stateless calls."""
        return self.store.busy + self.scratch_active

    # -- naming sessions: each principal's own namespace (core/session_ids.py) --------------
    @staticmethod
    def session_name(session_id: str, caller: Caller = ANYONE, field: str = "session_id") -> SessionName:
        """The session ``session_id`` names for ``caller``: in its own namespace, or (an admin's
        PRINCIPAL/ID) in another's."""
        return address(session_id, caller.principal, caller.admin, field)

    def info(self, session: Session, caller: Caller = ANYONE) -> SessionInfo:
        """The record of ``session`` with its id as ``caller`` names it."""
        info = self.store.info(session)
        shown = session.name.shown_to(caller.principal)
        return info if shown == info.id else dataclasses.replace(info, id=shown)

    def session_of(self, session_id: str, caller: Caller) -> Session:
        name = self.session_name(session_id, caller)
        return self.store.get(name.id, name.owner)

    # -- for holds (core/hold.py): what a hold may ask of the engine ---------------------------
    def require_live(self, session: Session) -> None:
        self.store.require_live(session)

    def check_reply(self, tokens: int, options: StepOptions) -> None:
        """InvalidArgument, before anything runs, when the reply could exceed --max-reply-bytes."""
        opts.check_reply(tokens, options, self.vocab.size, self.config.max_reply_bytes, self.vocab.max_piece_bytes)

    def take_tokens(self, caller: Caller, n: int) -> None:
        """Spend ``n`` of the caller's --tokens-per-second-per-principal (ResourceExhausted if over)."""
        self.quotas.take_tokens(caller.principal, n)

    async def compute(self, ids: np.ndarray, state: State, options: StepOptions) -> Tuple[Scores, State]:
        """Run ``ids`` from ``state`` (in --prefill-chunk chunks, batched with other sessions' steps)."""
        began = time.perf_counter()
        scores, state = await run_chunked(self.scheduler.submit, ids, state, options, self.config.prefill_chunk,
                                          lambda: self.active() > 1)  # others active: short chunks
        if self.metrics:
            self.metrics.step(time.perf_counter() - began)
        return scores, state

    def commit_state(self, session: Session, state: State, logprobs: np.ndarray, consumed: int,
                     start: bool = False, pending: Optional[Pending] = None) -> None:
        """Make ``state`` the session's state (counted from the zero state with ``start``), and
        write its snapshot record when due: the only place a step's result becomes a session's.
        With ``pending``: first rewind to its base if it was computed from a rewound one, and
        journal its ids (core/journal.py)."""
        self.store.require_live(session)
        # A step written through (before_commit: fenced by this copy's epoch, awaited) proved the
        # lease when it landed; a step whose OK is already on its way (in fronts mode the front
        # replies, then sends a one-way commit) proved it when it ran. Refusing either here (after
        # a heartbeat lapse since) would leave an acknowledged step uncommitted. If the lease did
        # move meanwhile, this copy's snapshot writes are fenced and its next call re-verifies and
        # drops it: the step is lost as under the snapshot policy, never kept twice.
        written = (pending is not None and self.durability is not None and self.durability.write_through
                   and session.through == pending.result.steps)
        acknowledged = pending is not None and pending.acknowledged
        if self.durability is not None and not written and not acknowledged:
            self.durability.require_lease(session)
        base = pending.base if pending is not None else None
        if base is not None and base.rewound:  # the step ran from the session rewound to base.steps
            assert session.journal is not None, "a rewound base comes from the journal"
            session.journal.truncate(base.steps)
            session.state, session.steps, session.last_logprobs = base.state, base.steps, base.last_logprobs
        ids = pending.ids if pending is not None else None
        if ids is None:
            session.journal = None  # ids unknown: nothing to replay
        else:
            assert pending is not None
            session.journal = self.journals.before_commit(
                session.journal, session.steps, session.state, session.last_logprobs, ids, start,
                pending.call_start, base is not None and base.confirmed, self.zeros)
        if start:
            self.store.clear(session)
        self.store.commit(session, state, logprobs, consumed)
        self.record_if_due(session)

    async def replay(self, journal: Journal, steps: int) -> Tuple[State, Optional[np.ndarray]]:
        """The state (and log-probs) after ``steps``, replayed from the journal's base: exact."""
        ids = journal.ids_to(steps)
        if not len(ids):
            return journal.state, journal.last_logprobs
        scores, state = await self.compute(ids, journal.state, StepOptions(top_k=0))
        return state, scores.last

    def record_if_due(self, session: Session) -> None:
        """Write the session's snapshot record if --snapshot-every says it is due."""
        if self.durability is not None:
            self.durability.committed(session)

    def end_session(self, session: Session, why: str) -> None:
        self.store.close(session, why)

    def release_hold(self, hold: Hold) -> None:
        """Give back what ``hold`` took: its open stream, the session (ended if it was to end with it)."""
        if hold.stream:
            self.quotas.close_stream(hold.caller.principal)
            hold.stream = False
        if hold.session is None:
            self.scratch_active -= 1
            return
        self.store.release(hold.session)
        if self.durability is not None:
            self.durability.released(hold.session)
        if hold.end_on_release:
            self.store.close(hold.session, "ended with its stream")

    # -- holding sessions --------------------------------------------------------
    async def resolve(self, session_id: str, caller: Caller = ANYONE) -> None:
        """Before a call that names a session: load it from its snapshot record if this replica
        does not hold it (another replica's, or this one's before a restart). No-op without a store."""
        if self.durability is None or not session_id:
            return
        name = self.session_name(session_id, caller)
        if not is_valid(name.id):  # malformed: refused later
            return
        held = self.store.peek(name.id, name.owner)
        if held is not None and await self.durability.confirm(held):
            return
        if self.store.peek(name.id, name.owner) is None:
            await self.durability.restore(name)

    async def hold(self, session_id: str, caller: Caller = ANYONE, end_on_release: bool = False,
                   yielding: bool = False) -> Hold:
        """A hold on the session, loaded from its snapshot record first if need be (SessionBusy if
        another call holds it); empty id: a scratch hold. ``yielding``: the hold gives the session
        up between its steps when another call asks for it (core/hold.py)."""
        if not session_id:
            return self._scratch_hold(caller)
        session = await self.take_session(session_id, caller)
        if yielding:
            return Hold(self, session, caller=caller, session_id=session_id, yielding=True)
        return Hold(self, session, end_on_release, caller)

    async def take_session(self, session_id: str, caller: Caller = ANYONE) -> Session:
        """The session, loaded if need be and marked busy for one writer (SessionBusy if it is)."""
        await self.resolve(session_id, caller)
        name = self.session_name(session_id, caller)
        return self.store.acquire(name.id, name.owner)

    def _scratch_hold(self, caller: Caller) -> Hold:
        self.scratch_active += 1
        return Hold(self, None, caller=caller)

    def _new_session(self, session_id: Optional[str], ttl: float, caller: Caller) -> Session:
        name = self.session_name(session_id or "", caller)
        self.quotas.check_sessions(name.owner, self.store.owned[name.owner])
        return self.store.create(name.id or None, ttl, owner=name.owner)

    async def open_stream(self, session_id: str, create: bool, ttl: float, end_with_stream: bool,
                          caller: Caller = ANYONE, remember: Optional[Remembrance] = None) -> Hold:
        """Attach a stream to a session, creating it first when asked (``remember``: keep the
        session's record under its request id, with the creation). Counts against the caller's
        open streams until released."""
        self.quotas.open_stream(caller.principal)
        try:
            if create:
                session = self._new_session(session_id, ttl, caller)
                hold = Hold(self, self.store.acquire(session.id, session.owner), end_with_stream, caller)
            else:
                hold = await self.hold(session_id, caller, end_with_stream)
        except BaseException:
            self.quotas.close_stream(caller.principal)
            raise
        hold.stream = True
        if remember is not None:
            self.ledger.keep(caller.principal, remember, hold.info)
        return hold

    async def charge_tokens(self, n: int, caller: Caller = ANYONE) -> None:
        """Spend ``n`` of the caller's tokens (--tokens-per-second-per-principal) for model work
        that runs outside a hold (Explain without commit); ResourceExhausted, nothing spent, if over."""
        self.take_tokens(caller, n)

    async def stream_slot(self, caller: Caller = ANYONE) -> StreamSlot:
        """Count a long-lived call that holds no session (ModelStreamInfer) as one of the caller's
        open streams until the slot is released."""
        return self.quotas.stream_slot(caller.principal)

    # -- one-shot calls ------------------------------------------------------------
    async def predict_deferred(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                               expected_steps: Optional[int] = None,
                               caller: Caller = ANYONE) -> Tuple[StepResult, DeferredCommit]:
        """Run a step and hand back its result and ``commit(wanted)``: the caller encodes the
        reply, then commits (only if the call is still live) or not before it returns, with
        no await in between, so nothing else sees the session meanwhile."""
        hold = await self.hold(session_id, caller)
        try:
            pending = await hold.run(ids, options, start, expected_steps)
        except BaseException:
            hold.release()
            raise
        return pending.result, self.deferred_commit(hold, pending)

    async def rewind_deferred(self, session_id: str, steps: int, caller: Caller = ANYONE) -> RecordCommit:
        """The session's state after ``steps`` tokens, replayed from its journal under a hold;
        ``commit(True)`` makes it the session's, ``commit(False)`` lets it go (both release)."""
        hold = await self.hold(session_id, caller)
        try:
            session = hold.session
            assert session is not None
            self.require_live(session)
            base = await hold.base(steps)
        except BaseException:
            hold.release()
            raise

        async def commit(wanted: bool = True, remember: None = None) -> Optional[SessionInfo]:
            try:
                if not wanted:
                    return None
                self.require_live(session)
                if base.rewound:
                    assert session.journal is not None
                    session.journal.truncate(base.steps)
                    self.store.rewound(session, base.state, base.steps, base.last_logprobs)
                    self.record_if_due(session)
                elif session.journal is not None:  # to its own count: the client saw every step
                    session.journal = self.journals.confirmed_all(session.steps, session.state,
                                                                  session.last_logprobs)
                return self.info(session, caller)
            finally:
                hold.release()

        return commit

    async def create_deferred(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                              options: StepOptions,
                              caller: Caller = ANYONE) -> Tuple[Optional[StepResult], CreateCommit]:
        """The prompt's result (None without one) and ``commit(wanted)``: with True it creates the
        session (with the prompt's state) and returns its record, with False it lets the result
        go; call it with True only if the call is still live. Nothing is created before
        ``commit(True)`` (no orphan whose id the client never learns)."""
        store = self.store
        leased = self.durability is not None and self.durability.leases is not None
        if leased and not session_id:
            session_id = new_session_id()  # named before the commit: its lease is claimed first
        if prompt is None and not leased:
            async def create(wanted: bool = True) -> Optional[SessionInfo]:
                return self.info(self._new_session(session_id, ttl, caller), caller) if wanted else None

            return None, self.remembering(create, caller)
        ttl = store.check_ttl(ttl)
        name = self.session_name(session_id or "", caller)
        if session_id:
            store.check_new_id(name.id, name.owner)
        self.quotas.check_sessions(name.owner, store.owned[name.owner])
        pending: Optional[Pending] = None
        if prompt is not None:
            scratch = self._scratch_hold(caller)
            try:
                pending = await scratch.run(prompt, options)
            finally:
                scratch.release()
        epoch = await self.claim_created(name, ttl, pending)

        async def commit(wanted: bool = True) -> Optional[SessionInfo]:
            if not wanted:
                self.unclaim_created(name, epoch)
                return None
            session = self._new_session(session_id, ttl, caller)  # raises before anything is committed
            self.claimed_created(session, epoch, pending)
            if pending is not None and prompt is not None:
                self.commit_state(session, pending.state, pending.result.scores.last, len(prompt), pending=pending)
                pending.result.session_id = session.id
            return self.info(session, caller)

        return (pending.result if pending is not None else None), self.remembering(commit, caller)

    def generate(self, session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions,
                 expected_steps: Optional[int] = None, caller: Caller = ANYONE,
                 remember: Optional[Remembrance] = None) -> AsyncIterator[Generated]:
        """Sample tokens one at a time, each committed as it is handed to the consumer
        (core/generation.py), and with ``remember`` kept under its request id as it is committed.
        Use with ``contextlib.aclosing`` so the session is released on cancel."""
        tokens = generate(self, session_id, prompt, options, expected_steps, caller)
        return tokens if remember is None else self.kept_tokens(tokens, remember, caller)

    async def sample_step(self, token: int, state: State) -> StepOutput:
        """One generated token through the model (batched with other sessions' steps), no top-k."""
        return await self.scheduler.submit(StepRequest(np.array([token], dtype=np.int64), state, False, 0))

    # -- upkeep ---------------------------------------------------------------------------
    def session_count(self) -> int:
        return len(self.store)

    def reap(self) -> int:
        """End expired sessions, and write snapshot records of those idle long enough with unsaved steps."""
        ended = self.store.reap()
        if self.durability is not None:
            self.durability.save_idle()
        return ended

    async def drain(self, timeout: float) -> None:
        """On graceful shutdown: write every session with unsaved steps and wait for the writes;
        with leases, write every session and release its lease (others take it up at once)."""
        if self.durability is not None:
            saved = self.durability.save_all()
            await self.durability.flush(timeout)
            released = await self.durability.release_all(timeout) if self.durability.leases is not None else 0
            if saved or released:
                log.info("drained: %d sessions snapshotted, %d leases released", saved, released)

    async def close_snapshots(self) -> None:
        """Close the snapshot store (after ``drain``)."""
        if self.durability is not None:
            await self.durability.close()

    def close(self) -> None:
        self.scheduler.close()
