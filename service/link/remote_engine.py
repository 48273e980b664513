"""The engine as a front process sees it (``--fronts N``): the contract's operations
(api/engine.py), each a message over the link (link/messages.py, sent by
link/engine_link.py) to the engine process (link/engine_host.py), so the servicers
run unchanged. Imports only api/ and link/.

Exact state holds across the link as it does in one process: a step runs in the
engine and is held there; the front commits it (a one-way message, which the
engine sees before anything else this front sends after it) as the reply goes
out, or sends its deferred commit once the reply is encoded and the call still
live. Holds taken from an engine instance that is gone fail UNAVAILABLE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, List, Optional, Tuple

import numpy as np

from ..api.engine_base import CreateCommit, EngineBase, RecordCommit
from ..api.errors import CallEnded, Unavailable
from ..api.options import GenerateOptions, StepOptions
from ..api.values import (ANYONE, Caller, DeferredCommit, Generated, Kept, Live, Remembrance, SessionInfo, State,
                          StepResult, always)
from . import messages as m
from .engine_link import EngineLink


@dataclass
class RuntimeInfo:
    """What the engine process serves, as its pongs describe it (for model descriptions)."""

    precision: str = "fp32"
    providers: List[str] = field(default_factory=list)
    path: str = ""


@dataclass
class RemotePending:
    """A step held in the engine, waiting for its commit."""

    result: StepResult


class RemoteHold:
    """A hold kept in the engine process, named by ``key`` (from the engine instance that gave it)."""

    def __init__(self, link: EngineLink, key: int, info: Optional[SessionInfo] = None, steps: int = 0,
                 has_session: bool = True) -> None:
        self.link = link
        self.key = key
        self.instance = link.instance
        self._info = info
        self.steps = info.steps if info else steps
        self.has_session = has_session
        self.released = False

    @property
    def info(self) -> SessionInfo:
        assert self._info is not None, "only a stream's hold carries its session's record"
        return self._info

    def _same_engine(self) -> bool:
        """After an engine restart, keys are reused: a message under this key would name another
        call's hold."""
        return self.link.instance == self.instance

    async def _call(self, request: m.Message):
        if not self._same_engine():
            raise Unavailable("the engine restarted and this call's session went with it; retry",
                              retry_after_ms=100, reason="ENGINE_RESTARTED")
        return await self.link.call(request)

    def _tell(self, request: m.Message, now: bool = False) -> None:
        if self._same_engine():  # a restarted engine holds nothing of ours
            self.link.tell(request, now=now)

    async def run(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                  expected_steps: Optional[int] = None) -> RemotePending:
        return RemotePending(await self._call(m.Run(self.key, ids, options, start, expected_steps)))

    def commit(self, pending: RemotePending, live: Live = always) -> StepResult:
        if not live():
            raise CallEnded("the call ended (cancelled or past its deadline) before its result was committed")
        self._tell(m.Commit(self.key))  # written with this loop turn's frames; the reply waits (written())
        return pending.result

    async def step(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                   expected_steps: Optional[int] = None, live: Live = always) -> StepResult:
        return self.commit(await self.run(ids, options, start, expected_steps), live)

    async def read_state(self) -> State:
        return await self._call(m.ReadHeldState(self.key))

    def deferred_commit(self, pending: RemotePending) -> DeferredCommit:
        return self._commit_and_release

    def _commit_and_release(self, wanted: bool, remember: Optional[Remembrance] = None) -> None:
        if not self.released:
            self.released = True
            # a kept result: its reply waits (written()); the engine keeps ``remember`` with the commit
            self._tell(m.DeferredCommit(self.key, bool(wanted), remember if wanted else None))

    def end_session(self, why: str) -> None:
        self._tell(m.EndSession(self.key, why))

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._tell(m.Release(self.key))


class RemoteSlot:
    """A stream slot kept in the engine process (core/quotas.py's StreamSlot), named by ``key``."""

    def __init__(self, link: EngineLink, key: int) -> None:
        self.link, self.key, self.instance = link, key, link.instance
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            if self.link.instance == self.instance:  # a restarted engine holds nothing of ours (and reuses keys)
                self.link.tell(m.Release(self.key))


class NoSlot:
    """The slot of a server with no --max-streams-per-principal: nothing to count."""

    def release(self) -> None:
        pass


class RemoteEngine(EngineBase):
    """The contract's operations, answered by the engine process."""

    def __init__(self, config, card, vocab, link: EngineLink) -> None:
        super().__init__(config, card, vocab)
        self.link = link

    def written(self) -> Optional[Awaitable[None]]:
        """The edge awaits this before any reply leaves (edge/rpc.py): commits are queued frames,
        and a whole loop turn's commits (a batch's worth of streams) go out in one write."""
        waiting = self.link.written()
        return None if waiting is None else self._wait_written(waiting)

    @staticmethod
    async def _wait_written(waiting: Awaitable[None]) -> None:
        try:
            await waiting
        except ConnectionError:  # the engine released this front's holds uncommitted: say so
            raise Unavailable("the link to the engine closed before this call's commit was written; its result "
                              "was not kept; retry", retry_after_ms=500, reason="ENGINE_UNAVAILABLE") from None

    @property
    def runtime(self) -> RuntimeInfo:
        s = self.link.status
        return RuntimeInfo(s.get("precision", self.config.precision), s.get("providers", []), s.get("path", ""))

    async def hold(self, session_id: str, caller: Caller = ANYONE, *, yielding: bool = False) -> RemoteHold:
        message = m.HoldYielding(session_id, caller) if yielding else m.Hold(session_id, caller)
        key, steps = await self.link.call(message)
        return RemoteHold(self.link, key, steps=steps, has_session=bool(session_id))

    async def open_stream(self, session_id: str, create: bool, ttl: float, end_with_stream: bool,
                          caller: Caller = ANYONE, remember: Optional[Remembrance] = None) -> RemoteHold:
        key, info = await self.link.call(m.OpenStream(session_id, create, ttl, end_with_stream, caller, remember))
        return RemoteHold(self.link, key, info)

    async def predict_deferred(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                               expected_steps: Optional[int] = None,
                               caller: Caller = ANYONE) -> Tuple[StepResult, DeferredCommit]:
        key, result = await self.link.call(m.Predict(session_id, ids, options, start, expected_steps, caller))
        hold = RemoteHold(self.link, key, has_session=bool(session_id))
        return result, hold.deferred_commit(RemotePending(result))

    async def create_deferred(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                              options: StepOptions,
                              caller: Caller = ANYONE) -> Tuple[Optional[StepResult], CreateCommit]:
        key, result = await self.link.call(m.Create(session_id, ttl, prompt, options, caller))
        instance = self.link.instance

        async def commit(wanted: bool = True, remember: Optional[Remembrance] = None) -> Optional[SessionInfo]:
            if not wanted:  # the call ended: the engine releases the prompt's result
                if self.link.instance == instance:
                    self.link.tell(m.ReleaseUnused(key))
                return None
            return await self.link.call(m.CreateCommit(key, remember))  # kept with the commit, in the engine

        return result, commit

    async def generate(self, session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions,
                       expected_steps: Optional[int] = None, caller: Caller = ANYONE,
                       remember: Optional[Remembrance] = None) -> AsyncIterator[Generated]:
        key = await self.link.call(m.GenOpen(session_id, prompt, options, expected_steps, caller, remember))
        instance = self.link.instance
        try:
            while (item := await self.link.call(m.GenNext(key))) is not None:
                yield item
        finally:
            if self.link.instance == instance:
                self.link.tell(m.Release(key))

    async def recall(self, request_id: str, fingerprint: bytes, caller: Caller = ANYONE) -> Optional[Kept]:
        return await self.link.call(m.Recall(request_id, fingerprint, caller))

    async def charge_tokens(self, n: int, caller: Caller = ANYONE) -> None:
        if self.config.tokens_per_second_per_principal:  # no limit: no round trip
            await self.link.call(m.Charge(n, caller))

    async def stream_slot(self, caller: Caller = ANYONE) -> "RemoteSlot | NoSlot":
        if not self.config.max_streams_per_principal:  # no limit: no round trip
            return NoSlot()
        return RemoteSlot(self.link, await self.link.call(m.Slot(caller)))

    # -- session records ----------------------------------------------------------------------
    async def get_session(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        return await self.link.call(m.GetSession(session_id, caller))

    # reset, delete, fork, import: the engine checks and keys the op; it is applied by RECORD_COMMIT
    # (EngineBase applies it only while the call is live) or dropped by RELEASE_UNUSED.
    def _record_commit(self, key: int) -> RecordCommit:
        instance = self.link.instance

        async def commit(wanted: bool = True, remember: Optional[Remembrance] = None) -> Optional[SessionInfo]:
            if not wanted:
                if self.link.instance == instance:
                    self.link.tell(m.ReleaseUnused(key))
                return None
            # the engine keeps ``remember`` with the commit: a cancel while this is on its way
            # cannot leave the op applied with its answer unkept
            return await self.link.call(m.RecordCommit(key, remember))

        return commit

    async def reset_deferred(self, session_id: str, caller: Caller = ANYONE) -> RecordCommit:
        return self._record_commit(await self.link.call(m.ResetSession(session_id, caller)))

    async def delete_deferred(self, session_id: str, caller: Caller = ANYONE) -> RecordCommit:
        return self._record_commit(await self.link.call(m.DeleteSession(session_id, caller)))

    async def rewind_deferred(self, session_id: str, steps: int, caller: Caller = ANYONE) -> RecordCommit:
        return self._record_commit(await self.link.call(m.RewindSession(session_id, steps, caller)))

    async def fork_deferred(self, session_id: str, new_id: Optional[str], ttl: float,
                            caller: Caller = ANYONE) -> RecordCommit:
        return self._record_commit(await self.link.call(m.ForkSession(session_id, new_id, ttl, caller)))

    async def list_sessions(self, limit: int, caller: Caller = ANYONE) -> Tuple[List[SessionInfo], int]:
        return await self.link.call(m.ListSessions(limit, caller))

    async def export_session(self, session_id: str, key: bytes, caller: Caller = ANYONE) -> Tuple[bytes, int]:
        return await self.link.call(m.ExportSession(session_id, key, caller))

    async def import_deferred(self, blob: bytes, key: bytes, session_id: Optional[str], ttl: float,
                              caller: Caller = ANYONE) -> RecordCommit:
        return self._record_commit(await self.link.call(m.ImportSession(blob, key, session_id, ttl, caller)))

    async def read_state(self, session_id: str, caller: Caller = ANYONE) -> Tuple[int, State]:
        return await self.link.call(m.ReadState(session_id, caller))
