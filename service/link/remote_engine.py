"""The engine as a front process sees it (``--fronts N``): the same calls as the
in-process Engine (service/api/engine.py), each a request over the link to
the engine process (service/link/engine_host.py), so the servicers run unchanged.

Exact state holds across the link as it does in one process: a step runs in
the engine and is held there; the front commits it (a one-way message, which
the engine sees before anything else this front sends after it) only as the
reply goes out, or settles it once the reply is encoded and the call still
live. A call cancelled while waiting lets go of whatever the engine took for
it, including what a late reply names.

``EngineLink`` connects to the engine (again and again while it is not
there) and pings it every PING_SECONDS. The connection closing (the engine
died) or no answer for DOWN_AFTER seconds (it hangs): every waiting call fails
UNAVAILABLE, new calls are refused, and ``on_health(False, None)`` turns the
front's health NOT_SERVING until an engine answers again (the supervisor
restarts a dead one). Leases taken from an engine instance that is gone fail
UNAVAILABLE.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from . import transport as link
from .engine_host import MAKES, PING_SECONDS, made_key
from ..api.engine import EngineFace
from ..api.errors import Unavailable
from ..edge.identity import ANYONE, Caller
from ..core.hold import CallEnded, Generated, Live, StepResult, always
from ..api.options import GenerateOptions, StepOptions
from ..core.quotas import StreamSlot
from ..core.scoring import Scores
from ..core.sessions import SessionInfo

log = logging.getLogger("service.remote_engine")
link.register_error(CallEnded)

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
        self._waiting: Dict[int, Tuple[asyncio.Future, str]] = {}
        self._connection: Optional[link.Connection] = None
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
    async def call(self, op: str, *args: Any) -> Any:
        if not self.up or self._connection is None:
            raise engine_down()
        return await self._request(op, args)

    async def _request(self, op: str, args) -> Any:
        assert self._connection is not None
        rid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (future, op)
        self._connection.send([op, rid, args])
        try:
            ok, body = await future
        except asyncio.CancelledError:  # the caller went away, maybe with the answer already in
            if future.done() and not future.cancelled():
                self._let_go(op, *future.result())
            elif op != "ping":
                self.tell("cancel", rid)  # the engine stops it, or lets go of what it made, at once
            raise
        if not ok:
            raise link.error_from(body)
        return body

    def tell(self, op: str, *args: Any) -> None:
        """A message with no reply (commit, release, ...); dropped while the engine is down
        (an engine that restarted holds nothing of this front's anyway)."""
        if self.up and self._connection is not None:
            self._connection.send([op, 0, args])

    def _on_reply(self, _connection, message: list) -> None:
        rid, ok, body = message
        entry = self._waiting.pop(rid, None)
        if entry is None:
            return
        future, op = entry
        if future.done():  # its caller was cancelled: let go of what the engine took for it
            self._let_go(op, ok, body)
            return
        future.set_result((ok, body))

    def _let_go(self, op: str, ok: bool, body: Any) -> None:
        """A reply nobody will read: drop what it names (a lease, a create, a generation), as
        never used: a stream that was to end its session with it never opened for its client."""
        if ok and op in MAKES:
            self.tell("drop", made_key(op, body))

    def _fail_waiting(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for future, _op in waiting.values():
            if not future.done():
                future.set_result((False, link.error_body(engine_down())))

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
            self._connection = await link.connect(self.address, link.Connection(self._on_reply, self._on_lost))
        except OSError:  # no engine listening (yet, or it is restarting)
            self._connection = None

    async def _ping(self) -> None:
        counts = self.counts.take() if self.counts else []
        ping = asyncio.ensure_future(self._request("ping", [self.name, counts]))
        ping.add_done_callback(lambda f: f.cancelled() or f.exception())  # read even if we stop waiting
        done, _ = await asyncio.wait({ping}, timeout=DOWN_AFTER)
        if ping in done and not ping.exception():
            self._pong(ping.result())
        elif self.up and time.monotonic() - self._last_pong > DOWN_AFTER:
            self._down("not answering for %.0f s" % DOWN_AFTER)
        if not ping.done():
            ping.cancel()

    def _on_lost(self, connection: link.Connection) -> None:
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


@dataclass
class RuntimeInfo:
    """What the engine process serves, as its pongs describe it (for model descriptions)."""

    precision: str = "fp32"
    providers: List[str] = field(default_factory=list)
    path: str = ""


def caller_body(caller: Caller) -> list:
    return [caller.principal, caller.admin]


def options_body(o: StepOptions) -> list:
    return [o.top_k, o.all_positions, o.logprobs]


def result_of(body) -> StepResult:
    """engine_host.result_body's list back to a StepResult (``scores.last`` stays in the engine)."""
    session_id, steps, consumed, positions, ids, lps, probs, logprobs, (k, every, lp) = body
    empty = np.empty((0,), np.float32)
    scores = Scores(link.rows(logprobs, np.float32, positions) if logprobs is not None else empty, empty,
                    link.rows(ids, np.int64, positions), link.rows(lps, np.float32, positions),
                    link.rows(probs, np.float32, positions))
    return StepResult(session_id, steps, consumed, scores, StepOptions(k, every, lp))


def info_of(body) -> SessionInfo:
    return SessionInfo(*body)


@dataclass
class RemotePending:
    """A step held in the engine, waiting for its commit."""

    result: StepResult


class RemoteLease:
    """A lease held in the engine process, named by ``key``."""

    def __init__(self, engine: "RemoteEngine", key: int, info: Optional[SessionInfo] = None, steps: int = 0,
                 stateless: bool = False) -> None:
        self.engine = engine
        self.link = engine.link
        self.key = key
        self.instance = engine.link.instance
        self._info = info
        self.steps = info.steps if info else steps
        self.session = None if stateless else key  # explain and defer ask whether there is a session
        self.released = False

    @property
    def info(self) -> SessionInfo:
        assert self._info is not None
        return self._info

    async def _call(self, op: str, *args: Any) -> Any:
        if self.link.instance != self.instance:
            raise Unavailable("the engine restarted and this call's session went with it; retry",
                              retry_after_ms=100, reason="ENGINE_RESTARTED")
        return await self.link.call(op, self.key, *args)

    async def run(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                  expected_steps: Optional[int] = None) -> RemotePending:
        return RemotePending(result_of(await self._call("run", link.ids_out(ids), options_body(options), start,
                                                           expected_steps)))

    def commit(self, pending: RemotePending, live: Live = always) -> StepResult:
        if not live():
            raise CallEnded("the call ended (cancelled or past its deadline) before its result was committed")
        self.link.tell("commit", self.key)
        return pending.result

    async def step(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                   expected_steps: Optional[int] = None, live: Live = always) -> StepResult:
        return self.commit(await self.run(ids, options, start, expected_steps), live)

    async def read_state(self) -> Tuple[np.ndarray, ...]:
        return tuple(await self._call("state"))

    def end(self, why: str) -> None:
        self.link.tell("end", self.key, why)

    def settle(self, keep: bool) -> None:
        if not self.released:
            self.released = True
            self.link.tell("settle", self.key, bool(keep))

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.link.tell("release", self.key)


class RemoteSlot:
    """A StreamSlot held in the engine process (quotas.StreamSlot), named by ``key``."""

    def __init__(self, link_: EngineLink, key: int) -> None:
        self.link, self.key, self.instance = link_, key, link_.instance
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            if self.link.instance == self.instance:  # a restarted engine holds nothing of ours (and reuses keys)
                self.link.tell("release", self.key)


class RemoteEngine(EngineFace):
    """The Engine's calls, answered by the engine process."""

    owns_state = False

    def __init__(self, config, card, link_: EngineLink) -> None:
        super().__init__(config, card)
        self.link = link_

    @property
    def runtime(self) -> RuntimeInfo:
        s = self.link.status
        return RuntimeInfo(s.get("precision", self.config.precision), s.get("providers", []), s.get("path", ""))

    async def resolve(self, session_id: str, caller: Caller = ANYONE) -> None:
        """Nothing to do here: the engine resolves every call that names a session."""

    async def hold_resolved(self, session_id: str, end_on_release: bool = False,
                            caller: Caller = ANYONE) -> RemoteLease:
        key, steps = await self.link.call("hold", session_id, caller_body(caller))
        return RemoteLease(self, key, steps=steps, stateless=not session_id)

    async def open_stream(self, session_id: str, create: bool, ttl: float, end_with_stream: bool,
                          caller: Caller = ANYONE) -> RemoteLease:
        key, info = await self.link.call("open", session_id, create, ttl, end_with_stream, caller_body(caller))
        return RemoteLease(self, key, info_of(info))

    async def predict_deferred(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                               expected_steps: Optional[int] = None,
                               caller: Caller = ANYONE) -> Tuple[StepResult, Callable[[bool], None]]:
        key, result = await self.link.call("predict", session_id, link.ids_out(ids), options_body(options), start,
                                           expected_steps, caller_body(caller))
        return result_of(result), RemoteLease(self, key, stateless=not session_id).settle

    @staticmethod
    def defer(lease: RemoteLease, pending: RemotePending) -> Callable[[bool], None]:
        return lease.settle

    async def create_deferred(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                              options: StepOptions, caller: Caller = ANYONE):
        key, result = await self.link.call("create", session_id, ttl, link.ids_out(prompt), options_body(options),
                                           caller_body(caller))

        async def keep(wanted: bool = True) -> Optional[SessionInfo]:
            if not wanted:  # the call ended: the engine lets go of the prompt's result
                self.link.tell("drop", key)
                return None
            return info_of(await self.link.call("keep", key))

        return (result_of(result) if result is not None else None), keep

    async def generate(self, session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions,
                       expected_steps: Optional[int] = None, caller: Caller = ANYONE) -> AsyncIterator[Generated]:
        s = options.sampling
        body = [options.max_tokens, [s.temperature, s.top_k, s.top_p, s.seed], list(options.stop)]
        key = await self.link.call("gen_open", session_id, link.ids_out(prompt), body, expected_steps,
                                   caller_body(caller))
        try:
            while (item := await self.link.call("gen_next", key)) is not None:
                yield Generated(*item)
        finally:
            self.link.tell("release", key)

    async def charge_tokens(self, n: int, caller: Caller = ANYONE) -> None:
        if self.config.tokens_per_second_per_principal:  # no limit: no round trip
            await self.link.call("charge", n, caller_body(caller))

    async def stream_slot(self, caller: Caller = ANYONE) -> Union[RemoteSlot, StreamSlot]:
        if not self.config.max_streams_per_principal:  # no limit: no round trip
            return StreamSlot(lambda: None)
        return RemoteSlot(self.link, await self.link.call("slot", caller_body(caller)))

    # -- session records ----------------------------------------------------------------------
    async def get_session(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        return info_of(await self.link.call("get_session", session_id, caller_body(caller)))

    async def reset_session(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        return info_of(await self.link.call("reset_session", session_id, caller_body(caller)))

    async def delete_session(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        return info_of(await self.link.call("delete_session", session_id, caller_body(caller)))

    async def fork_session(self, session_id: str, new_id: Optional[str], ttl: float,
                           caller: Caller = ANYONE) -> SessionInfo:
        return info_of(await self.link.call("fork_session", session_id, new_id, ttl, caller_body(caller)))

    async def list_sessions(self, limit: int, caller: Caller = ANYONE) -> Tuple[List[SessionInfo], int]:
        infos, total = await self.link.call("list_sessions", limit, caller_body(caller))
        return [info_of(i) for i in infos], total

    async def export_blob(self, session_id: str, key: bytes, caller: Caller = ANYONE) -> Tuple[bytes, int]:
        blob, steps = await self.link.call("export_blob", session_id, key, caller_body(caller))
        return blob, steps

    async def import_blob(self, blob: bytes, key: bytes, session_id: Optional[str], ttl: float,
                          caller: Caller = ANYONE) -> SessionInfo:
        return info_of(await self.link.call("import_blob", blob, key, session_id, ttl, caller_body(caller)))

    async def read_state(self, session_id: str, caller: Caller = ANYONE) -> Tuple[int, Tuple[np.ndarray, ...]]:
        steps, state = await self.link.call("read_state", session_id, caller_body(caller))
        return steps, tuple(state)
