"""The engine side of the link (``--fronts N``): one Engine, answering the front
processes' requests (service/link/transport.py) on a ROUTER socket.

What a front holds across messages (a stream's lease, a unary step waiting to
be settled, a create waiting to be kept, a generation) lives here under an id
the front names in its later messages, tagged with the front's connection.
When that connection closes (the front exited or died: the kernel closes its
socket) everything it held is let go without committing, so a front dying
mid-call leaves every session as its last committed step left it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import secrets
from dataclasses import dataclass
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Dict, Optional, Set, Tuple

import numpy as np

from . import transport as link
from ..core.engine import Engine
from ..api.errors import ServiceError, SessionBusy, Unavailable
from ..edge.identity import Caller
from ..core.hold import CallEnded, Lease, Pending
from ..api.options import GenerateOptions, StepOptions
from ..core.sampling import SamplingOptions

log = logging.getLogger("service.engine_host")
link.register_error(CallEnded)

PING_SECONDS = 0.25  # a front pings this often (the engine's liveness, as the front sees it)
# Ops that make a held key: where it is in the reply (None: the reply is the key).
MAKES = {"open": 0, "hold": 0, "predict": 0, "create": 0, "gen_open": None, "slot": None}
REMEMBERED = 4096  # per front: recent requests whose held key a "cancel" can still name
BUSY_GRACE, BUSY_POLL = 0.05, 0.001  # seconds a call waits for a session another front is letting go


def made_key(op: str, body: Any) -> int:
    """The held key in the reply to an op of MAKES."""
    where = MAKES[op]
    return body if where is None else body[where]


def caller_of(body) -> Caller:
    return Caller(body[0], bool(body[1]))


def result_body(result) -> list:
    """A StepResult for the front (remote_engine.result_of): top-k as raw int64/float32 rows."""
    s, o = result.scores, result.options
    return [result.session_id, result.steps, result.consumed, len(s.top_ids),
            link.raw(s.top_ids, np.int64), link.raw(s.top_logprobs, np.float32), link.raw(s.top_probs, np.float32),
            link.raw(s.logprobs, np.float32) if o.logprobs else None, [o.top_k, o.all_positions, o.logprobs]]


def info_body(info) -> list:
    return list(dataclasses.astuple(info))


def step_options(body) -> StepOptions:
    return StepOptions(int(body[0]), bool(body[1]), bool(body[2]))


def generate_options(body) -> GenerateOptions:
    max_tokens, (temperature, top_k, top_p, seed), stop = body
    return GenerateOptions(max_tokens, SamplingOptions(temperature, top_k, top_p, seed), tuple(stop))


@dataclass
class Held:
    """Something a front holds here between messages."""

    peer: link.Connection
    lease: Optional[Lease] = None
    pending: Optional[Pending] = None
    task: Optional[asyncio.Task] = None  # the step or token being computed for it now
    keep: Optional[Callable] = None  # a create's keep()
    generation: Any = None  # an Engine.generate async iterator, made at its first token
    start_generation: Optional[Callable[[], Any]] = None
    slot: Any = None  # a quotas.StreamSlot: a stream that holds no session (ModelStreamInfer)


class EngineHost:
    def __init__(self, engine: Engine, address: str, status: Callable[[], dict] = dict) -> None:
        self.engine = engine
        self.address = address
        self.status = status  # extra fields for every pong (the snapshot store's health)
        self.instance = secrets.token_hex(4)  # a restarted engine has another: fronts drop what they held
        self.held: Dict[int, Held] = {}
        self.on_requests: Optional[Callable[[str, list], None]] = None  # a front's request counts (metrics)
        self._ids = itertools.count(1)
        self._server: Optional[asyncio.AbstractServer] = None
        self._fronts: Set[link.Connection] = set()
        # For a front's "cancel rid": its requests still running, and the recent ones that made
        # something it holds (rid -> key), so a cancelled call's lease is let go at once.
        self._running: Dict[Tuple[link.Connection, int], asyncio.Task] = {}
        self._made: Dict[link.Connection, "OrderedDict[int, int]"] = {}
        Handler = Callable[..., Any]
        self._sync: Dict[str, Handler] = {
            "ping": self.ping, "commit": self.commit, "settle": self.settle, "end": self.end,
            "release": self.release, "drop": self.drop, "cancel": self.cancel, "gen_open": self.gen_open,
            "charge": self.charge, "slot": self.slot}
        self._async: Dict[str, Handler] = {
            "open": self.open, "hold": self.hold, "run": self.run, "predict": self.predict, "create": self.create,
            "keep": self.keep, "gen_next": self.gen_next, "state": self.state}
        # Engine methods answered as they are, with how each result travels.
        self._records: Dict[str, Handler] = {
            "get_session": info_body, "reset_session": info_body, "delete_session": info_body,
            "fork_session": info_body, "import_blob": info_body,
            "list_sessions": lambda r: [[info_body(i) for i in r[0]], r[1]], "export_blob": list, "read_state": list}

    async def start(self) -> None:
        self._server = await link.serve(self.address, lambda: link.Connection(self._on_message, self._on_lost))
        log.info("engine link listening on %s (instance %s)", self.address, self.instance)

    def close(self) -> None:
        for key in list(self.held):
            self._let_go(key)
        if self._server is not None:
            self._server.close()
        for front in list(self._fronts):
            front.close()

    # -- dispatch ----------------------------------------------------------------------
    def _on_message(self, peer: link.Connection, message: list) -> None:
        self._fronts.add(peer)
        op, rid, args = message
        handler = self._sync.get(op)
        if handler is not None:
            try:
                body = handler(peer, *args)
            except BaseException as exc:  # noqa: BLE001 - answered as a status
                self._fail(peer, rid, op, exc)
                return
            self._made_by(peer, rid, op, body)
            self._reply(peer, rid, True, body)
            return
        if op not in self._records and op not in self._async:
            self._fail(peer, rid, op, ServiceError(f"the engine does not know the request {op!r}"))
            return
        task = asyncio.get_running_loop().create_task(self._answer(peer, rid, op, args))
        if rid:
            self._running[(peer, rid)] = task
        if op in ("run", "gen_next") and args and args[0] in self.held:  # a release or close may cancel it
            self.held[args[0]].task = task

    async def _answer(self, peer: link.Connection, rid: int, op: str, args: list) -> None:
        try:
            body = await self._patiently(
                lambda: self._record(op, args) if op in self._records else self._async[op](peer, *args))
        except BaseException as exc:  # noqa: BLE001 - answered as a status (a cancel: nobody waits)
            if not isinstance(exc, asyncio.CancelledError):
                self._fail(peer, rid, op, exc)
            return
        finally:
            self._running.pop((peer, rid), None)
        self._made_by(peer, rid, op, body)
        self._reply(peer, rid, True, body)

    @staticmethod
    async def _patiently(attempt: Callable[[], Awaitable[Any]]) -> Any:
        """``attempt()``, tried again for up to BUSY_GRACE while it finds its session busy.

        Fronts are separate connections, so nothing orders one front's messages against
        another's: a client's call through front B can arrive before the commit-and-release
        of its previous call through front A, which the client saw answered (the single
        process let go before replying). A writer that holds a session for real (an open
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

    def _made_by(self, peer: link.Connection, rid: int, op: str, body: Any) -> None:
        """Remember what request ``rid`` made for its front to hold, for a "cancel rid" racing its reply."""
        if op in MAKES:
            made = self._made.setdefault(peer, OrderedDict())
            made[rid] = made_key(op, body)
            if len(made) > REMEMBERED:
                made.popitem(last=False)

    def cancel(self, peer: link.Connection, rid: int) -> None:
        """The front's caller of request ``rid`` went away (cancelled, past its deadline): stop it,
        or let go of what it made, now, not when the front reads the reply, so the caller's
        retry does not find the session still held."""
        task = self._running.pop((peer, rid), None)
        if task is not None and not task.done():
            task.cancel()  # each step's own cleanup lets go of what it took
            return
        made = self._made.get(peer)
        if made is not None and rid in made:
            self._let_go(made.pop(rid), unused=True)

    def _reply(self, peer: link.Connection, rid: int, ok: bool, body: Any) -> None:
        if rid:
            peer.send([rid, ok, body])

    def _fail(self, peer: link.Connection, rid: int, op: str, exc: BaseException) -> None:
        if not isinstance(exc, ServiceError):
            if isinstance(exc, KeyError):  # an id this engine never gave out (it restarted) or already let go
                exc = Unavailable("the engine no longer holds this call's session (it restarted, or took this "
                                  "front for dead); retry", retry_after_ms=100, reason="ENGINE_RESTARTED")
            else:
                request_id = secrets.token_hex(4)
                log.error("request %s: %s failed", request_id, op, exc_info=exc)
                exc = ServiceError(f"internal error (request id {request_id}); the server log has the details")
        self._reply(peer, rid, False, link.error_body(exc))

    def _lease(self, key: int) -> Lease:
        """The lease a front holds under ``key`` (KeyError: this engine never gave it out)."""
        lease = self.held[key].lease
        assert lease is not None, "not a lease"
        return lease

    def _keep(self, held: Held) -> int:
        key = next(self._ids)
        self.held[key] = held
        if held.peer.closed:  # its front went away while this was being made: nobody will ever name it
            self._let_go(key)
        return key

    # -- liveness ------------------------------------------------------------------------
    def ping(self, peer: link.Connection, front: str = "", requests: tuple = ()) -> dict:
        if requests and self.on_requests is not None:
            self.on_requests(front, list(requests))
        runtime = self.engine.runtime
        return {"instance": self.instance, "precision": runtime.precision, "providers": list(runtime.providers),
                "path": str(runtime.path), **self.status()}

    def _on_lost(self, peer: link.Connection) -> None:
        """A front's connection closed: let go of everything it held, keeping nothing uncommitted."""
        self._fronts.discard(peer)
        self._made.pop(peer, None)
        for front, rid in [k for k in self._running if k[0] is peer]:
            self._running.pop((front, rid)).cancel()
        gone = [key for key, held in self.held.items() if held.peer is peer]
        for key in gone:
            self._let_go(key)
        if gone:
            log.warning("a front disconnected holding %d calls: let go of them, nothing uncommitted was kept",
                        len(gone))

    def _let_go(self, key: int, unused: bool = False) -> None:
        """End what a front held, keeping nothing it had not committed. ``unused``: its caller
        never saw it (cancelled before the reply), so a stream that was to end its session
        with it never opened, as far as the client knows: the session stays."""
        held = self.held.pop(key, None)
        if held is None:
            return
        if held.task is not None and not held.task.done():
            held.task.cancel()
        if held.lease is not None:
            if unused:
                held.lease.end_on_release = False
            held.lease.release()
        if held.generation is not None:
            self._close_generation(held)
        if held.slot is not None:
            held.slot.release()

    def _close_generation(self, held: Held) -> None:
        async def close() -> None:
            if held.task is not None:
                await asyncio.gather(held.task, return_exceptions=True)  # aclose needs it stopped
            await held.generation.aclose()  # releases its lease

        asyncio.get_running_loop().create_task(close())

    # -- leases: streams, unary steps, Explain with commit ---------------------------------
    async def open(self, peer, session_id, create, ttl, end_with_stream, caller) -> list:
        lease = await self.engine.open_stream(session_id, create, ttl, end_with_stream, caller_of(caller))
        return [self._keep(Held(peer, lease)), info_body(lease.info)]

    async def hold(self, peer, session_id, caller) -> list:
        lease = await self.engine.hold_resolved(session_id, caller=caller_of(caller))
        return [self._keep(Held(peer, lease)), lease.steps]

    async def run(self, peer, key, ids, options, start, expected) -> list:
        held, lease = self.held[key], self._lease(key)
        pending = held.pending = await lease.run(link.ids_in(ids), step_options(options), start, expected)
        held.task = None
        return result_body(pending.result)

    async def state(self, peer, key) -> list:
        return list(await self._lease(key).read_state())

    def commit(self, peer, key) -> None:
        held, lease = self.held[key], self._lease(key)
        pending, held.pending = held.pending, None
        assert pending is not None, "commit without a step"
        lease.commit(pending)

    def end(self, peer, key, why) -> None:
        self._lease(key).end(why)

    def release(self, peer, key) -> None:
        self._let_go(key)

    def drop(self, peer, key) -> None:
        """Let go of what a reply named that the front's caller never read (or a create not kept)."""
        self._let_go(key, unused=True)

    def settle(self, peer, key, keep) -> None:
        """Keep a held step (if ``keep`` and the session lives) and let the lease go."""
        lease, pending = self._lease(key), self.held.pop(key).pending
        assert pending is not None, "settle without a step"
        self.engine.defer(lease, pending)(bool(keep))

    async def predict(self, peer, session_id, ids, options, start, expected, caller) -> list:
        lease = await self.engine.hold_resolved(session_id, caller=caller_of(caller))
        try:
            pending = await lease.run(link.ids_in(ids), step_options(options), start, expected)
        except BaseException:
            lease.release()
            raise
        return [self._keep(Held(peer, lease, pending)), result_body(pending.result)]

    # -- quotas of calls that hold no lease ---------------------------------------------------
    def charge(self, peer, n, caller) -> None:
        self.engine.quotas.take_tokens(caller_of(caller).principal, int(n))

    def slot(self, peer, caller) -> int:
        return self._keep(Held(peer, slot=self.engine.quotas.stream_slot(caller_of(caller).principal)))

    # -- creating sessions -------------------------------------------------------------------
    async def create(self, peer, session_id, ttl, prompt, options, caller) -> list:
        result, keep = await self.engine.create_deferred(session_id, ttl, link.prompt_in(prompt), step_options(options),
                                                         caller_of(caller))
        return [self._keep(Held(peer, keep=keep)), result_body(result) if result is not None else None]

    async def keep(self, peer, key) -> list:
        keep = self.held.pop(key).keep
        assert keep is not None, "not a create"
        return info_body(await keep(True))

    # -- generation: one token per gen_next, committed as it is handed to the front ---------
    def gen_open(self, peer, session_id, prompt, options, expected, caller) -> int:
        args = (session_id, link.prompt_in(prompt), generate_options(options), expected, caller_of(caller))
        return self._keep(Held(peer, start_generation=lambda: self.engine.generate(*args)))

    async def gen_next(self, peer, key) -> Optional[list]:
        held = self.held[key]
        first = held.generation is None
        if first:  # the session is held (and the prompt run) at the first token
            assert held.start_generation is not None, "not a generation"
            held.generation = held.start_generation()
        try:
            g = await held.generation.__anext__()
        except StopAsyncIteration:
            return None
        except SessionBusy:
            if first:
                held.generation = None  # a generator that raised is over: a retry starts a new one
            raise
        finally:
            held.task = None
        return [g.token, g.piece, g.text, g.logprob, g.steps, g.finish]

    # -- session records ------------------------------------------------------------------------
    async def _record(self, op: str, args: list):
        *rest, caller = args
        result = await getattr(self.engine, op)(*rest, caller=caller_of(caller))
        return self._records[op](result)
