"""The front's connection to the engine process (``--fronts N``): ``EngineLink``
sends the link's messages (link/messages.py) and hands back their decoded
replies; ``RemoteEngine`` (link/remote_engine.py) is built on it.

It connects to the engine (again and again while it is not there) and pings it
every PING_SECONDS. The connection closing (the engine died) or no answer for
DOWN_AFTER seconds (it hangs): every waiting call fails UNAVAILABLE, new calls
are refused, and ``on_health(False, None)`` turns the front's health NOT_SERVING
until an engine answers again (the supervisor restarts a dead one). A call
cancelled while waiting releases whatever the engine took for it, including
what a late reply names.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from typing import Any, Callable, Dict, Optional, Tuple, Type

from ..api.errors import Unavailable
from ..proc import budget
from . import transport
from .messages import PING_SECONDS, Cancel, Message, Ping, ReleaseUnused
from .wire_values import decode_error, encode_error

log = logging.getLogger("service.remote_engine")

DOWN_AFTER = 2.0  # seconds without a pong: the engine is taken for down


def engine_down() -> Unavailable:
    return Unavailable("the engine process is not answering (restarting?); retry shortly", retry_after_ms=500,
                       reason="ENGINE_UNAVAILABLE")


class RequestCounts:
    """The front's own metrics: RPC outcomes, sent to the engine with each ping (one /metrics)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def request(self, method: str, code: str) -> None:
        self.counts[(method, code)] += 1

    def take(self) -> list:
        counts, self.counts = self.counts, Counter()
        return [[m, c, n] for (m, c), n in counts.items()]

    def close(self) -> None:
        pass


class EngineLink:
    def __init__(self, address: str, name: str = "front",
                 on_health: Callable[[bool, Optional[bool]], None] = lambda up, store: None,
                 counts: Optional[RequestCounts] = None) -> None:
        self.address = address
        self.name = name  # for the log
        self.on_health = on_health
        self.counts = counts
        self.up = False
        self.instance = ""  # the engine instance answering now
        self.status: Dict[str, Any] = {}  # its last pong: runtime description, store health
        self._ids = itertools.count(1)
        self._waiting: Dict[int, Tuple[asyncio.Future, Type[Message]]] = {}
        self._connection: Optional[transport.Connection] = None
        self._pinger: Optional[asyncio.Task] = None
        self._last_pong = 0.0
        self._ready = asyncio.Event()
        self._closing = False

    def start(self) -> None:
        self._pinger = asyncio.get_running_loop().create_task(self._ping_forever())

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self._closing = True  # our own close is no engine failure
        if self._pinger is not None:
            self._pinger.cancel()
        self._fail_waiting()
        if self._connection is not None:
            self._connection.close()

    # -- requests ----------------------------------------------------------------------------
    async def call(self, request: Message) -> Any:
        """Send ``request`` and wait for its reply, decoded by its message type."""
        if not self.up or self._connection is None:
            raise engine_down()
        return await self._request(request)

    async def _request(self, request: Message) -> Any:
        assert self._connection is not None
        cls = type(request)
        rid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (future, cls)
        mark = budget.start()  # the cost timers (proc/budget.py), None when off
        body = request.encode()
        budget.add("front.encode", mark)
        self._connection.send([cls.op, rid, body])
        try:
            ok, body = await future
            budget.add_wall("front.call", mark)  # sent -> its reply read: the engine's time and both hops
        except asyncio.CancelledError:  # the caller went away, maybe with the answer already in
            if future.done() and not future.cancelled():
                self._release_unread(cls, *future.result())
            elif cls is not Ping:
                self.tell(Cancel(rid))  # the engine stops it, or releases what it made, at once
            raise
        if not ok:
            raise decode_error(body)
        mark = budget.start()
        try:
            return cls.decode_reply(body)  # type: ignore[attr-defined]
        finally:
            budget.add("front.decode", mark)

    def tell(self, request: Message, now: bool = False) -> None:
        """A message with no reply (commit, release, ...); dropped while the engine is down
        (an engine that restarted holds nothing of this front's anyway). ``now``: written before
        this returns (transport.Connection.send), for what must reach the engine before a reply goes out."""
        if self.up and self._connection is not None:
            self._connection.send([request.op, 0, request.encode()], now=now)

    def written(self) -> Optional[asyncio.Future]:
        """None when nothing waits to be written to the engine; else a future done once it has
        been (transport.Connection.written)."""
        return self._connection.written() if self._connection is not None else None

    def _on_reply(self, _connection, message: list) -> None:
        rid, ok, body = message
        entry = self._waiting.pop(rid, None)
        if entry is None:
            return
        future, cls = entry
        if future.done():  # its caller was cancelled: release what the engine took for it
            self._release_unread(cls, ok, body)
            return
        future.set_result((ok, body))

    def _release_unread(self, cls: Type[Message], ok: bool, body: Any) -> None:
        """A reply nobody will read: release what it names (a hold, a create, a generation), as
        never used: a stream that was to end its session with it never opened for its client."""
        if ok and cls.makes_key:
            self.tell(ReleaseUnused(cls.key_of(body)))  # type: ignore[attr-defined]

    def _fail_waiting(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for future, _op in waiting.values():
            if not future.done():
                future.set_result((False, encode_error(engine_down())))

    # -- liveness --------------------------------------------------------------------------------
    async def _ping_forever(self) -> None:
        while True:
            asked = time.monotonic()
            if self._connection is None:
                await self._connect()
            if self._connection is not None:
                await self._ping()
            await asyncio.sleep(max(0.0, PING_SECONDS - (time.monotonic() - asked)))

    async def _connect(self) -> None:
        try:
            connection = transport.Connection(self._on_reply, self._on_lost)
            self._connection = await transport.connect(self.address, connection)
        except OSError:  # no engine listening (yet, or it is restarting)
            self._connection = None

    async def _ping(self) -> None:
        counts = self.counts.take() if self.counts else []
        ping = asyncio.ensure_future(self._request(Ping(self.name, counts)))
        ping.add_done_callback(lambda f: f.cancelled() or f.exception())  # read even if we stop waiting
        done, _ = await asyncio.wait({ping}, timeout=DOWN_AFTER)
        if ping in done and not ping.exception():
            self._pong(ping.result())
        elif self.up and time.monotonic() - self._last_pong > DOWN_AFTER:
            self._down("not answering for %.0f s" % DOWN_AFTER)
        if not ping.done():
            ping.cancel()

    def _on_lost(self, connection: transport.Connection) -> None:
        if connection is self._connection and not self._closing:
            self._connection = None
            self._down("its connection closed")

    def _pong(self, status: dict) -> None:
        self._last_pong = time.monotonic()
        store_changed = status.get("store") != self.status.get("store")
        self.status = status
        if status["instance"] != self.instance:
            if self.instance:
                log.warning("engine restarted (instance %s -> %s): calls it held have ended", self.instance,
                            status["instance"])
            self.instance = status["instance"]
        if not self.up:
            self.up = True
            self._ready.set()
            self.on_health(True, status.get("store"))
        elif store_changed:
            self.on_health(True, status.get("store"))

    def _down(self, why: str) -> None:
        was_up, self.up = self.up, False
        self._fail_waiting()
        if was_up:
            log.error("%s: engine process %s: NOT_SERVING until it is back", self.name, why)
            self.on_health(False, None)
