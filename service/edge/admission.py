"""Admission of calls and the life of open streams, for every servicer on the port.

Counts calls in flight, refuses new ones with UNAVAILABLE while draining, and
ends streams that sit idle waiting for their next request: after
--stream-idle-timeout (RESOURCE_EXHAUSTED, the session is kept), and after
one second once draining (UNAVAILABLE), so an idle stream holds neither its
session nor the shutdown forever.
"""
from __future__ import annotations

import asyncio
from typing import Optional

from ..api.errors import ResourceExhausted, Unavailable
from .safe_decoding import check_decoded

DRAIN_IDLE_SECONDS = 1.0  # while draining, a stream idle this long between steps is ended


class Admission:
    def __init__(self, metrics=None, idle_timeout: float = 0.0) -> None:
        self.metrics = metrics
        self.draining = False
        self.in_flight = 0  # calls admitted and not finished
        self._idle_streams: dict = {}  # stream handler task -> when it began waiting for its next request
        self._idle_limit = idle_timeout  # seconds; DRAIN_IDLE_SECONDS while draining; 0: never
        self._idle_ended: set = set()  # tasks ended for idling
        self._drainer: Optional[asyncio.Task] = None

    def admit(self) -> bool:
        """Count a new call in (Unavailable while draining)."""
        if self.draining:
            raise Unavailable("server is shutting down; retry, the next attempt may reach another replica",
                              retry_after_ms=100)
        self.in_flight += 1
        return True

    def finish(self, name: str, code: str, admitted: bool) -> None:
        """Count a call out, with its status."""
        if admitted:
            self.in_flight -= 1
        if self.metrics:
            self.metrics.request(name, code)

    def start_draining(self) -> None:
        """Refuse new calls, and end streams that sit idle between steps for
        DRAIN_IDLE_SECONDS (they would otherwise hold shutdown for the whole grace
        period); streams that keep stepping go on until the grace period ends."""
        self.draining = True
        self._idle_limit = DRAIN_IDLE_SECONDS
        self._watch_idle_streams()

    def _watch_idle_streams(self) -> None:
        if self._idle_limit and (self._drainer is None or self._drainer.done()):
            self._drainer = asyncio.get_running_loop().create_task(self._end_idle_streams())

    async def _end_idle_streams(self) -> None:
        """End streams idle longer than the limit (--stream-idle-timeout; 1 s while draining):
        a held stream must not pin its session, or shutdown, forever."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for task, since in list(self._idle_streams.items()):
                if now - since >= self._idle_limit and task not in self._idle_ended:
                    self._idle_ended.add(task)
                    task.cancel()
            await asyncio.sleep(min(0.05 if self.draining else 1.0, self._idle_limit))

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every admitted call to finish; True if they did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._drainer is not None:
            self._drainer.cancel()
        return not self.in_flight

    async def next_request(self, requests):
        """The next stream request, None at the end; Unavailable if the server drains meanwhile."""
        task = asyncio.current_task()
        self._idle_streams[task] = asyncio.get_running_loop().time()
        self._watch_idle_streams()
        try:
            return check_decoded(await requests.__anext__())
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if task not in self._idle_ended:
                raise
            task.uncancel()
            if self.draining:
                raise Unavailable("server is shutting down; open the stream again (another replica may take it)",
                                  retry_after_ms=100) from None
            raise ResourceExhausted(
                f"the stream sent nothing for {self._idle_limit:g} s (--stream-idle-timeout) and was ended; "
                "the session is kept: open a new stream to go on", reason="STREAM_IDLE") from None
        finally:
            self._idle_streams.pop(task, None)
            self._idle_ended.discard(task)
