"""The engine side of the link (``--fronts N``): one Engine, answering the front
processes' messages (link/messages.py) over their UNIX sockets (link/transport.py).

What a front holds across messages (a stream's hold, a unary step waiting for its
deferred commit, a create waiting for its commit, a generation) lives here under
a key the front names in its later messages, tagged with the front's connection.
When that connection closes (the front exited or died: the kernel closes its
socket) everything it held is released without committing, so a front dying
mid-call leaves every session as its last committed step left it.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, Awaitable, Callable, Dict, Optional, Set, Tuple, Type

from ..api.errors import ServiceError, SessionBusy, Unavailable
from ..api.values import Generated, Kept, SessionInfo, State, StepResult
from ..core.engine import Engine
from ..proc import budget
from . import messages as m
from .held_keys import Held, HeldKeys
from . import transport
from .wire_values import encode_error

log = logging.getLogger("service.engine_host")

BUSY_GRACE, BUSY_POLL = 0.05, 0.001  # seconds a call waits for a session another front is releasing


class EngineHost:
    def __init__(self, engine: Engine, address: str, status: Callable[[], dict] = dict) -> None:
        self.engine = engine
        self.address = address
        self.status = status  # extra fields for every pong (the snapshot store's health)
        self.instance = secrets.token_hex(4)  # a restarted engine has another: fronts forget what they held
        self.keys = HeldKeys()  # what fronts hold here between messages
        self.on_requests: Optional[Callable[[str, list], None]] = None  # a front's request counts (metrics)
        self._server: Optional[asyncio.AbstractServer] = None
        self._fronts: Set[transport.Connection] = set()
        # For a front's CANCEL rid: its requests still running (the keys remember what finished
        # ones made), so a cancelled call's hold is released at once.
        self._running: Dict[Tuple[transport.Connection, int], asyncio.Task] = {}
        # The one dispatch table: each op's message type and its handler here.
        self._handlers: Dict[int, Tuple[Type[m.Message], Callable[..., Any]]] = {
            cls.op: (cls, handler) for cls, handler in (
                (m.Ping, self.ping), (m.OpenStream, self.open_stream), (m.Hold, self.hold), (m.Run, self.run),
                (m.ReadHeldState, self.read_held_state), (m.Commit, self.commit),
                (m.DeferredCommit, self.deferred_commit), (m.EndSession, self.end_session),
                (m.Release, self.release), (m.ReleaseUnused, self.release_unused), (m.Cancel, self.cancel),
                (m.Predict, self.predict), (m.Create, self.create), (m.CreateCommit, self.create_commit),
                (m.GenOpen, self.gen_open), (m.GenNext, self.gen_next), (m.Charge, self.charge),
                (m.Slot, self.slot), (m.GetSession, self.get_session), (m.ResetSession, self.reset_session),
                (m.DeleteSession, self.delete_session), (m.ForkSession, self.fork_session),
                (m.ListSessions, self.list_sessions), (m.ExportSession, self.export_session),
                (m.ImportSession, self.import_session), (m.ReadState, self.read_state),
                (m.RecordCommit, self.record_commit), (m.Recall, self.recall),
                (m.RewindSession, self.rewind_session), (m.HoldYielding, self.hold),
            )}
        assert set(self._handlers) == set(m.Op), "every op has its handler"

    async def start(self) -> None:
        self._server = await transport.serve(self.address,
                                             lambda: transport.Connection(self._on_message, self._on_lost))
        log.info("engine link listening on %s (instance %s)", self.address, self.instance)

    def close(self) -> None:
        self.keys.release_all()
        if self._server is not None:
            self._server.close()
        for front in list(self._fronts):
            front.close()

    # -- dispatch ----------------------------------------------------------------------
    def _on_message(self, peer: transport.Connection, message: list) -> None:
        self._fronts.add(peer)
        op, rid, body = message
        entry = self._handlers.get(op)
        if entry is None:
            self._fail(peer, rid, op, ServiceError(f"the engine does not know the request {op!r}"))
            return
        cls, handler = entry
        mark = budget.start()  # the cost timers (proc/budget.py), None when off
        try:
            request: Any = cls.decode(body)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a malformed message is answered, not fatal
            self._fail(peer, rid, op, exc)
            return
        budget.add("host.decode", mark)
        if cls.in_order:  # answered now, before anything this front sent after it
            mark = budget.start()
            try:
                value = handler(peer, request)
            except BaseException as exc:  # noqa: BLE001 - answered as a status
                self._fail(peer, rid, op, exc)
                return
            self._reply_ok(peer, rid, cls, value)
            budget.add("host.in_order", mark)  # commits, releases: applied as they are read
            return
        task = asyncio.get_running_loop().create_task(self._answer(peer, rid, cls, handler, request))
        if rid:
            self._running[(peer, rid)] = task
        if cls.runs_under_key and request.key in self.keys:  # a release or close may cancel it
            self.keys[request.key].task = task

    async def _answer(self, peer: transport.Connection, rid: int, cls: Type[m.Message],
                      handler: Callable[..., Awaitable[Any]], request: Any) -> None:
        mark = budget.start()
        try:
            value = await self._patiently(lambda: handler(peer, request))
        except BaseException as exc:  # noqa: BLE001 - answered as a status (a cancel: nobody waits)
            if not isinstance(exc, asyncio.CancelledError):
                self._fail(peer, rid, cls.op, exc)
            return
        finally:
            self._running.pop((peer, rid), None)
        budget.add_wall("host.answer", mark)  # read -> its answer ready (a step: queued, batched, run)
        self._reply_ok(peer, rid, cls, value)

    def _reply_ok(self, peer: transport.Connection, rid: int, cls: Type[m.Message], value: Any) -> None:
        mark = budget.start()
        body = cls.encode_reply(value)  # type: ignore[attr-defined]
        budget.add("host.encode", mark)
        if cls.makes_key:
            self.keys.remember(peer, rid, cls.key_of(body))  # type: ignore[attr-defined]
        if rid:
            peer.send([rid, True, body])

    @staticmethod
    async def _patiently(attempt: Callable[[], Awaitable[Any]]) -> Any:
        """``attempt()``, tried again for up to BUSY_GRACE while it finds its session busy.

        Fronts are separate connections, so nothing orders one front's messages against
        another's: a client's call through front B can arrive before the commit-and-release
        of its previous call through front A, which the client saw answered (the single
        process released before replying). A call that holds a session for real (an open
        stream, a running step) still gets SESSION_BUSY, BUSY_GRACE later. A call that
        failed changed nothing, so trying it again is safe."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + BUSY_GRACE
        while True:
            try:
                return await attempt()
            except SessionBusy:
                if loop.time() >= give_up:
                    raise
                await asyncio.sleep(BUSY_POLL)

    def cancel(self, peer: transport.Connection, request: m.Cancel) -> None:
        """The front's caller of request ``rid`` went away (cancelled, past its deadline): stop it,
        or release what it made, now, not when the front reads the reply, so the caller's
        retry does not find the session still held."""
        task = self._running.pop((peer, request.rid), None)
        if task is not None and not task.done():
            task.cancel()  # each step's own cleanup releases what it took
            return
        key = self.keys.take_remembered(peer, request.rid)
        if key is not None:
            self.keys.release(key, unused=True)

    def _fail(self, peer: transport.Connection, rid: int, op: int, exc: BaseException) -> None:
        if not isinstance(exc, ServiceError):
            if isinstance(exc, KeyError):  # a key this engine never gave out (it restarted) or already released
                exc = Unavailable("the engine no longer holds this call's session (it restarted, or took this "
                                  "front for dead); retry", retry_after_ms=100, reason="ENGINE_RESTARTED")
            else:
                request_id = secrets.token_hex(4)
                log.error("request %s: op %s failed", request_id, op, exc_info=exc)
                exc = ServiceError(f"internal error (request id {request_id}); the server log has the details")
        if rid:
            peer.send([rid, False, encode_error(exc)])

    # -- liveness ------------------------------------------------------------------------
    def ping(self, peer: transport.Connection, request: m.Ping) -> dict:
        if request.requests and self.on_requests is not None:
            self.on_requests(request.front, list(request.requests))
        runtime = self.engine.runtime
        return {"instance": self.instance, "precision": runtime.precision, "providers": list(runtime.providers),
                "path": str(runtime.path), **self.status()}

    def _on_lost(self, peer: transport.Connection) -> None:
        """A front's connection closed: release everything it held, committing nothing more."""
        self._fronts.discard(peer)
        for front, rid in [k for k in self._running if k[0] is peer]:
            self._running.pop((front, rid)).cancel()
        gone = self.keys.release_front(peer)
        if gone:
            log.warning("a front disconnected holding %d calls: released them, nothing uncommitted was kept", gone)

    # -- holds: streams, unary steps, Explain with commit ---------------------------------
    async def open_stream(self, peer, r: m.OpenStream) -> Tuple[int, SessionInfo]:
        hold = await self.engine.open_stream(r.session_id, r.create, r.ttl, r.end_with_stream, r.caller, r.remember)
        return self.keys.add(Held(peer, hold)), hold.info

    async def hold(self, peer, r: m.Hold) -> Tuple[int, int]:  # HOLD and HOLD_YIELDING
        hold = await self.engine.hold(r.session_id, r.caller, yielding=isinstance(r, m.HoldYielding))
        return self.keys.add(Held(peer, hold)), hold.steps

    async def run(self, peer, r: m.Run) -> StepResult:
        held, hold = self.keys[r.key], self.keys.hold_of(r.key)
        pending = held.pending = await hold.run(r.ids, r.options, r.start, r.expected_steps)
        held.task = None
        return pending.result

    async def read_held_state(self, peer, r: m.ReadHeldState) -> State:
        return await self.keys.hold_of(r.key).read_state()

    def commit(self, peer, r: m.Commit) -> None:
        held, hold = self.keys[r.key], self.keys.hold_of(r.key)
        pending, held.pending = held.pending, None
        assert pending is not None, "commit without a step"
        pending.acknowledged = True  # one-way: the front has replied
        hold.commit(pending)

    def end_session(self, peer, r: m.EndSession) -> None:
        self.keys.hold_of(r.key).end_session(r.why)

    def release(self, peer, r: m.Release) -> None:
        self.keys.release(r.key)

    def release_unused(self, peer, r: m.ReleaseUnused) -> None:
        self.keys.release(r.key, unused=True)

    def deferred_commit(self, peer, r: m.DeferredCommit) -> None:
        """Commit a held step (if wanted and the session lives) and release the hold; the answer
        kept under its request id with the commit."""
        hold, pending = self.keys.hold_of(r.key), self.keys.pop(r.key).pending
        assert pending is not None, "deferred commit without a step"
        pending.acknowledged = True  # one-way: the front has replied
        self.engine.deferred_commit(hold, pending)(r.wanted, r.remember)

    async def predict(self, peer, r: m.Predict) -> Tuple[int, StepResult]:
        hold = await self.engine.hold(r.session_id, r.caller)
        try:
            pending = await hold.run(r.ids, r.options, r.start, r.expected_steps)
        except BaseException:
            hold.release()
            raise
        return self.keys.add(Held(peer, hold, pending)), pending.result

    # -- quotas of calls that hold no session ---------------------------------------------------
    def charge(self, peer, r: m.Charge) -> None:
        self.engine.take_tokens(r.caller, r.n)

    async def slot(self, peer, r: m.Slot) -> int:
        return self.keys.add(Held(peer, slot=await self.engine.stream_slot(r.caller)))

    # -- creating sessions -------------------------------------------------------------------
    async def create(self, peer, r: m.Create) -> Tuple[int, Optional[StepResult]]:
        result, commit = await self.engine.create_deferred(r.session_id, r.ttl, r.prompt, r.options, r.caller)
        return self.keys.add(Held(peer, create_commit=commit)), result

    async def create_commit(self, peer, r: m.CreateCommit) -> SessionInfo:
        commit = self.keys.pop(r.key).create_commit
        assert commit is not None, "not a create"
        info = await commit(True, r.remember)  # the answer kept with the commit, no await between
        assert info is not None
        return info

    # -- generation: one token per GEN_NEXT, committed as it is handed to the front ---------
    def gen_open(self, peer, r: m.GenOpen) -> int:
        def start():
            return self.engine.generate(r.session_id, r.prompt, r.options, r.expected_steps, r.caller, r.remember)

        return self.keys.add(Held(peer, start_generation=start))

    async def gen_next(self, peer, r: m.GenNext) -> Optional[Generated]:
        held = self.keys[r.key]
        first = held.generation is None
        if first:  # the session is held (and the prompt run) at the first token
            assert held.start_generation is not None, "not a generation"
            held.generation = held.start_generation()
        try:
            return await held.generation.__anext__()
        except StopAsyncIteration:
            return None
        except SessionBusy:
            if first:
                held.generation = None  # a generator that raised is over: a retry starts a new one
            raise
        finally:
            held.task = None

    # -- session records ------------------------------------------------------------------------
    async def get_session(self, peer, r: m.GetSession) -> SessionInfo:
        return await self.engine.get_session(r.session_id, r.caller)

    # reset, delete, fork, import: checked and keyed here, applied by RECORD_COMMIT (the call live)
    async def reset_session(self, peer, r: m.ResetSession) -> int:
        return self.keys.add(Held(peer, create_commit=await self.engine.reset_deferred(r.session_id, r.caller)))

    async def delete_session(self, peer, r: m.DeleteSession) -> int:
        return self.keys.add(Held(peer, create_commit=await self.engine.delete_deferred(r.session_id, r.caller)))

    async def rewind_session(self, peer, r: m.RewindSession) -> int:
        commit = await self.engine.rewind_deferred(r.session_id, r.steps, r.caller)
        return self.keys.add(Held(peer, create_commit=commit))

    async def fork_session(self, peer, r: m.ForkSession) -> int:
        commit = await self.engine.fork_deferred(r.session_id, r.new_id, r.ttl, r.caller)
        return self.keys.add(Held(peer, create_commit=commit))

    async def list_sessions(self, peer, r: m.ListSessions):
        return await self.engine.list_sessions(r.limit, r.caller)

    async def export_session(self, peer, r: m.ExportSession):
        return await self.engine.export_session(r.session_id, r.key, r.caller)

    async def import_session(self, peer, r: m.ImportSession) -> int:
        commit = await self.engine.import_deferred(r.blob, r.key, r.session_id, r.ttl, r.caller)
        return self.keys.add(Held(peer, create_commit=commit))

    async def recall(self, peer, r: m.Recall) -> Optional[Kept]:
        return await self.engine.recall(r.request_id, r.fingerprint, r.caller)

    async def record_commit(self, peer, r: m.RecordCommit) -> SessionInfo:
        commit = self.keys[r.key].create_commit
        assert commit is not None, "not a record op"
        try:
            info = await commit(True, r.remember)  # the answer kept with the commit, no await between
        except SessionBusy:  # kept for _patiently's next try (the op is checked again then)
            raise
        except BaseException:
            self.keys.release(r.key)
            raise
        self.keys.release(r.key)  # (its commit ran: a release's commit(False) is a no-op)
        assert info is not None
        return info

    async def read_state(self, peer, r: m.ReadState):
        return await self.engine.read_state(r.session_id, r.caller)
