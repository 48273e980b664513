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

import contextlib
import dataclasses
import logging
import time
from typing import AsyncGenerator, AsyncIterator, Callable, List, Optional, Tuple

import numpy as np

from .batch_runner import BatchRunner, StepRequest
from ..persist.durability import Durability, snapshot_of
from ..api.engine import EngineFace
from ..api.errors import FailedPrecondition
from ..edge.identity import ANYONE, Caller
from .hold import CallEnded, Generated, Lease, Pending, StepResult
from ..api.options import GenerateOptions, StepOptions
from .quotas import Quotas, StreamSlot
from .sampling import Sampler
from .scheduler import Scheduler
from .session_ids import SessionName, address, is_valid
from .sessions import Session, SessionInfo, SessionStore, State, check_session_id

__all__ = ["CallEnded", "Engine", "Generated", "Lease", "Pending", "StepResult"]

log = logging.getLogger("service.engine")


class Engine(EngineFace):
    def __init__(self, config, card, runtime, metrics=None, clock=time.monotonic, on_event=None) -> None:
        super().__init__(config, card)
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

    def _session_event(self, kind: str, session: Session, why: str) -> None:
        if self.durability is not None:
            self.durability.on_event(kind, session)
        if self._on_event is not None:
            self._on_event(kind, session, why)

    def attach_snapshots(self, snapshots) -> None:
        """Write sessions to ``snapshots`` (a service.snapshots.SnapshotStore) and resume from it."""
        c = self.config
        self.durability = Durability(self.store, snapshots, self.model_sha256, c.snapshot_every,
                                     c.snapshot_idle_seconds)

    @property
    def zeros(self) -> State:
        return self.store.zeros

    def committed(self, session: Session) -> None:
        """Called by a lease after each commit."""
        if self.durability is not None:
            self.durability.committed(session)

    def active(self) -> int:
        """Callers that may be sending steps now: held sessions and stateless calls."""
        return self.store.busy + self.scratch_active

    # -- naming sessions: each principal's own namespace (service/core/session_ids.py) --------------
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

    # -- holding sessions --------------------------------------------------------
    async def resolve(self, session_id: str, caller: Caller = ANYONE) -> None:
        """Before a call that names a session: load it from its snapshot if this replica does
        not hold it (another replica's, or this one's before a restart). No-op without a store."""
        if self.durability is None or not session_id:
            return
        name = self.session_name(session_id, caller)
        if not is_valid(name.id):  # malformed: refused later
            return
        if self.store.peek(name.id, name.owner) is None:
            await self.durability.restore(name)

    async def hold_resolved(self, session_id: str, end_on_release: bool = False, caller: Caller = ANYONE) -> Lease:
        """``hold``, after ``resolve``."""
        await self.resolve(session_id, caller)
        return self.hold(session_id, end_on_release, caller)

    def hold(self, session_id: str, end_on_release: bool = False, caller: Caller = ANYONE) -> Lease:
        """A lease on the session (SessionBusy if another writer has it); empty id: a scratch lease."""
        if not session_id:
            self.scratch_active += 1
            return Lease(self, None, caller=caller)
        name = self.session_name(session_id, caller)
        return Lease(self, self.store.acquire(name.id, name.owner), end_on_release, caller)

    def _new_session(self, session_id: Optional[str], ttl: float, caller: Caller) -> Session:
        name = self.session_name(session_id or "", caller)
        self.quotas.check_sessions(name.owner, self.store.owned[name.owner])
        return self.store.create(name.id or None, ttl, owner=name.owner)

    async def open_stream(self, session_id: str, create: bool, ttl: float, end_with_stream: bool,
                          caller: Caller = ANYONE) -> Lease:
        """Attach a stream to a session, creating it first when asked. Counts against the
        caller's open streams until released."""
        self.quotas.open_stream(caller.principal)
        try:
            if create:
                session = self._new_session(session_id, ttl, caller)
                lease = Lease(self, self.store.acquire(session.id, session.owner), end_with_stream, caller)
            else:
                lease = await self.hold_resolved(session_id, end_with_stream, caller)
        except BaseException:
            self.quotas.close_stream(caller.principal)
            raise
        lease.stream = True
        return lease

    async def charge_tokens(self, n: int, caller: Caller = ANYONE) -> None:
        """Spend ``n`` of the caller's tokens (--tokens-per-second-per-principal) for model work
        that runs outside a lease (Explain without commit); ResourceExhausted, nothing spent, if over."""
        self.quotas.take_tokens(caller.principal, n)

    async def stream_slot(self, caller: Caller = ANYONE) -> StreamSlot:
        """Count a long-lived call that holds no session (ModelStreamInfer) as one of the caller's
        open streams until the slot is released."""
        return self.quotas.stream_slot(caller.principal)

    # -- one-shot calls ------------------------------------------------------------
    async def predict_deferred(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                               expected_steps: Optional[int] = None,
                               caller: Caller = ANYONE) -> Tuple[StepResult, Callable[[bool], None]]:
        """Run a step and hand back its result and ``settle(keep)``: the caller encodes the
        reply, then settles (keeping the step only if the call is still live) before it
        returns, with no await in between, so nothing else sees the session meanwhile."""
        lease = await self.hold_resolved(session_id, caller=caller)
        try:
            pending = await lease.run(ids, options, start, expected_steps)
        except BaseException:
            lease.release()
            raise
        return pending.result, self.defer(lease, pending)

    @staticmethod
    def defer(lease: Lease, pending: Pending) -> Callable[[bool], None]:
        """``settle(keep)``: commit ``pending`` if ``keep`` (and the session still lives), then
        let the lease go."""
        session = lease.session
        if session is None:  # stateless: nothing to keep
            lease.release()
            return lambda keep: None

        def settle(keep: bool) -> None:
            try:
                if keep and session.alive:
                    lease.commit(pending)
            finally:
                lease.release()

        return settle

    async def create_deferred(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                              options: StepOptions,
                              caller: Caller = ANYONE) -> Tuple[Optional[StepResult], Callable]:
        """The prompt's result (None without one) and ``keep(wanted)``: with True it creates the
        session (with the prompt's state) and returns its record, with False it lets the result
        go; call it with True only if the call is still live. Nothing is created before
        ``keep(True)`` (no orphan whose id the client never learns)."""
        store = self.store
        if prompt is None:
            async def create(wanted: bool = True) -> Optional[SessionInfo]:
                return self.info(self._new_session(session_id, ttl, caller), caller) if wanted else None

            return None, create
        store.check_ttl(ttl)
        name = self.session_name(session_id or "", caller)
        if session_id:
            store.check_new_id(name.id, name.owner)
        self.quotas.check_sessions(name.owner, store.owned[name.owner])
        scratch = self.hold("", caller=caller)
        try:
            pending = await scratch.run(prompt, options)
        finally:
            scratch.release()

        async def keep(wanted: bool = True) -> Optional[SessionInfo]:
            if not wanted:
                return None
            session = self._new_session(session_id, ttl, caller)  # raises before anything is kept
            store.commit(session, pending.state, pending.result.scores.last, len(prompt))
            self.committed(session)
            pending.result.session_id = session.id
            return self.info(session, caller)

        return pending.result, keep

    async def generate(self, session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions,
                       expected_steps: Optional[int] = None, caller: Caller = ANYONE) -> AsyncIterator[Generated]:
        """Sample tokens one at a time. Each token is committed (with the prompt, for the
        first) as it is handed to the consumer, and sampling stops as soon as the consumer
        does: the session holds the tokens handed out, so every token a client receives
        is in it; a token whose write was cut off by a cancel may be in it too.

        Use with ``contextlib.aclosing`` so the session is released on cancel.
        """
        self.quotas.open_stream(caller.principal)  # a long-lived call: it counts as a stream while it runs
        try:
            async with contextlib.aclosing(self._generate(session_id, prompt, options, expected_steps,
                                                          caller)) as tokens:
                async for item in tokens:
                    yield item
        finally:
            self.quotas.close_stream(caller.principal)

    async def _generate(self, session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions,
                        expected_steps: Optional[int], caller: Caller) -> AsyncGenerator[Generated, None]:
        lease = await self.hold_resolved(session_id, caller=caller)
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
            after = int(prompt[-1]) if prompt is not None and len(prompt) else None
            async for item in self._sample(lease, pending, logprobs, options, after):
                yield item
        finally:
            lease.release()

    async def _sample(self, lease: Lease, pending: Optional[Pending], logprobs, options: GenerateOptions,
                      after: Optional[int] = None):
        sampler, decoder = Sampler(options.sampling), self.vocab.decoder(after)
        # Stop sequences match the generated text (whatever the vocabulary): ``tail`` keeps just
        # enough of it that a stop sequence straddling two pieces is still seen.
        tail, keep = "", max((len(s) for s in options.stop), default=0)
        state = pending.state if pending else lease.state
        steps = pending.result.steps if pending else lease.steps
        logprobs = pending.result.scores.last if pending else logprobs
        unsent = pending.result.consumed if pending else 0  # prompt tokens to commit with the first token
        one = StepOptions(top_k=0)
        for i in range(options.max_tokens):
            token = sampler.sample(logprobs)
            ids = np.array([token], dtype=np.int64)
            self.quotas.take_tokens(lease.caller.principal, 1)
            out = await self.scheduler.submit(StepRequest(ids, state, False, 0))
            text = decoder.feed(token)
            finish = "length" if i + 1 == options.max_tokens else None
            if keep and text:
                seen = tail + text
                if any(s in seen for s in options.stop):
                    finish = "stop"
                tail = seen[-(keep - 1):] if keep > 1 else ""
            if finish:
                text += decoder.flush()  # the last piece carries whatever the decoder still held
            # Keep the token (and the prompt, the first time) as it is handed out to be written:
            # a client never receives a token its session does not hold.
            lease.commit(Pending(StepResult("", steps + 1, unsent + 1, out.scores, one), out.state, start=False))
            yield Generated(token, self.vocab.pieces[token], text, float(logprobs[token]), steps + 1, finish)
            state, steps, logprobs, unsent = out.state, steps + 1, out.scores.last, 0
            if finish:
                return

    # -- session records -------------------------------------------------------------
    # (Call ``resolve`` first where the session may live only in the snapshot store.)
    def session(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        name = self.session_name(session_id, caller)
        return self.info(self.store.get(name.id, name.owner), caller)

    def reset(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        name = self.session_name(session_id, caller)
        return self.info(self.store.reset(name.id, name.owner), caller)

    def delete(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        name = self.session_name(session_id, caller)
        return self.info(self.store.delete(name.id, name.owner), caller)

    def fork(self, session_id: str, new_id: Optional[str], ttl: float, caller: Caller = ANYONE) -> SessionInfo:
        """A copy of the session in its own namespace (an admin's fork of PRINCIPAL/ID is PRINCIPAL's)."""
        name = self.session_name(session_id, caller)
        if new_id:  # before the lookup: a malformed new id is refused whether or not the source exists
            check_session_id(new_id, "new_session_id")
        source = self.store.get(name.id, name.owner)
        self.quotas.check_sessions(source.owner, self.store.owned[source.owner])
        return self.info(self.store.fork(name.id, new_id, ttl, name.owner), caller)

    def sessions(self, limit: int, caller: Caller = ANYONE) -> Tuple[List[SessionInfo], int]:
        """The caller's sessions (an admin's: everyone's, others' as PRINCIPAL/ID), most recently
        used first, and how many."""
        owner = caller.owner
        total = len(self.store) if owner is None else self.store.owned[owner]
        return [self.info(s, caller) for s in self.store.list(limit, owner)], total

    def export_session(self, session_id: str, key: bytes, caller: Caller = ANYONE) -> Tuple[bytes, int]:
        """A signed, owner-free blob of the session's state, and its steps (service/persist/blob.py)."""
        from ..persist.blob import encode_blob

        name = self.session_name(session_id, caller)
        session = self.store.get(name.id, name.owner)
        return encode_blob(snapshot_of(session, self.model_sha256), key), session.steps

    def import_session(self, blob: bytes, key: bytes, session_id: Optional[str], ttl: float,
                       caller: Caller = ANYONE) -> SessionInfo:
        """A new session, owned by the caller, from an exported blob."""
        from ..persist.blob import decode_blob

        name = self.session_name(session_id or "", caller)
        if session_id:  # before the blob: a malformed id is refused whatever the blob holds
            check_session_id(name.id)
        snap = decode_blob(blob, key, self.model_sha256)  # refuses forged blobs and other models
        self.quotas.check_sessions(name.owner, self.store.owned[name.owner])
        if session_id:
            self.store.check_new_id(name.id, name.owner)
        ttl = self.store.check_ttl(ttl) if ttl else snap.ttl
        session = self.store.restore(name.id, name.owner, snap.state, snap.steps, snap.last_logprobs, ttl)
        self.committed(session)
        return self.info(session, caller)

    def snapshot(self, session_id: str, caller: Caller = ANYONE) -> Tuple[int, State, Optional[np.ndarray]]:
        """(steps, state, log-probs after the last token) of a session, read-only; it is not held
        and this is no use of it (for explain, and tests that compare states bitwise)."""
        name = self.session_name(session_id, caller)
        session = self.store.get(name.id, name.owner)
        return session.steps, session.state, session.last_logprobs

    # -- the records API of the servicers: async, resolving first (the same calls cross the
    #    link in front processes, service/link/remote_engine.py) ----------------------------------
    async def get_session(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        await self.resolve(session_id, caller)
        return self.session(session_id, caller)

    async def reset_session(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        await self.resolve(session_id, caller)
        return self.reset(session_id, caller)

    async def delete_session(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        await self.resolve(session_id, caller)
        return self.delete(session_id, caller)

    async def fork_session(self, session_id: str, new_id: Optional[str], ttl: float,
                           caller: Caller = ANYONE) -> SessionInfo:
        if new_id:  # before any lookup, here or in the snapshot store
            check_session_id(new_id, "new_session_id")
        await self.resolve(session_id, caller)
        return self.fork(session_id, new_id, ttl, caller)

    async def list_sessions(self, limit: int, caller: Caller = ANYONE) -> Tuple[List[SessionInfo], int]:
        return self.sessions(limit, caller)

    async def export_blob(self, session_id: str, key: bytes, caller: Caller = ANYONE) -> Tuple[bytes, int]:
        await self.resolve(session_id, caller)
        return self.export_session(session_id, key, caller)

    async def import_blob(self, blob: bytes, key: bytes, session_id: Optional[str], ttl: float,
                          caller: Caller = ANYONE) -> SessionInfo:
        return self.import_session(blob, key, session_id, ttl, caller)

    async def read_state(self, session_id: str, caller: Caller = ANYONE) -> Tuple[int, State]:
        """(steps, state) of the caller's session, read-only, loaded from its snapshot if need be."""
        await self.resolve(session_id, caller)
        steps, state, _ = self.snapshot(session_id, caller)
        return steps, state

    def session_count(self) -> int:
        return len(self.store)

    def reap(self) -> int:
        """End expired sessions, and snapshot those idle long enough with unsaved steps."""
        ended = self.store.reap()
        if self.durability is not None:
            self.durability.save_idle()
        return ended

    async def drain(self, timeout: float) -> None:
        """On graceful shutdown: snapshot every session with unsaved steps and wait for the writes."""
        if self.durability is not None:
            saved = self.durability.save_all()
            await self.durability.snapshots.flush(timeout)
            if saved:
                log.info("drained: %d sessions snapshotted", saved)

    def close(self) -> None:
        self.scheduler.close()
