"""The sequences' sessions a ModelStreamInfer stream keeps held between its requests.

As an lstm.v1 Stream holds its session for its whole life, a KServe stream keeps a hold
on each sequence it steps, so a continue is a run and a commit under a hold it has
already: no session lookup, hold and release per step (Triton's sequence batcher keeps
a sequence's slot the same way). The holds yield (``engine.hold(..., yielding=True)``,
core/hold.py): another call that asks for the session between two of the stream's
requests (a ModelInfer, another stream, a reset or delete, an eviction, a handoff to
another replica) finds it as if nobody held it, and the stream takes it again at its
next step, refused as any hold would be if it cannot. A hold is released at
sequence_end, when a request of its sequence fails, when the stream ends, and after
IDLE_RELEASE seconds without a step, so a sequence its client forgot expires after its
ttl and gets its idle snapshot as if no stream held it.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any, Dict, Optional

from ...api.engine import EngineApi, HoldApi
from ...api.values import Caller

IDLE_RELEASE = 1.0  # seconds a held sequence may go without a step before its hold is released


class HeldSequences:
    """One stream's holds, by session id. A sequence's requests run one at a time (the stream
    orders them), so ``take`` and ``done``/``drop`` of one id never overlap."""

    def __init__(self, engine: EngineApi, caller: Caller, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.caller = caller
        self.loop = loop
        self._held: Dict[str, HoldApi[Any]] = {}
        self._idle: "OrderedDict[str, float]" = OrderedDict()  # held, between steps: id -> since (loop time)
        self._sweep: Optional[asyncio.TimerHandle] = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._held)

    async def take(self, session_id: str) -> HoldApi[Any]:
        """The stream's hold on the session, taken now if it has none (SessionBusy, NotFound...)."""
        hold = self._held.get(session_id)
        if hold is not None:
            self._idle.pop(session_id, None)
            return hold
        hold = await self.engine.hold(session_id, self.caller, yielding=True)
        if self._closed:  # the stream ended while the hold was being taken
            hold.release()
            raise asyncio.CancelledError()
        self._held[session_id] = hold
        return hold

    def done(self, session_id: str) -> None:
        """A step of the sequence was answered: its hold waits for the next one."""
        if session_id in self._held:
            self._idle[session_id] = self.loop.time()
            if self._sweep is None:
                self._sweep = self.loop.call_later(IDLE_RELEASE, self._release_idle)

    def drop(self, session_id: str) -> None:
        """Release the sequence's hold (its end, or a failed request of it); no-op if none."""
        self._idle.pop(session_id, None)
        hold = self._held.pop(session_id, None)
        if hold is not None:
            hold.release()

    def _release_idle(self) -> None:
        loop = self.loop
        self._sweep = None
        cutoff = loop.time() - IDLE_RELEASE
        while self._idle:
            session_id, since = next(iter(self._idle.items()))
            if since > cutoff:
                self._sweep = loop.call_later(since - cutoff, self._release_idle)
                return
            self.drop(session_id)

    def close(self) -> None:
        """The stream ended: release every hold."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for session_id in list(self._held):
            self.drop(session_id)
