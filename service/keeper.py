"""What keeps an engine's sessions beyond its calls: the snapshot store (with
--state-store) and the reaper that ends expired sessions and snapshots idle
ones. Shared by the single-process server (app.py) and the engine process of
``--fronts N`` (engine_main.py), which own the sessions.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Optional


class StateKeeper:
    def __init__(self, engine, config, metrics,
                 on_store_health: Optional[Callable[[bool], Awaitable[None]]] = None) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self.on_store_health = on_store_health  # the store's health as its own grpc.health service
        self.snapshots: Optional[Any] = None  # a snapshots.SnapshotStore with --state-store
        self._reaper: Optional[asyncio.Task] = None

    @property
    def store_healthy(self) -> Optional[bool]:
        """None without a store."""
        return None if self.snapshots is None else bool(self.snapshots.healthy)

    async def open(self) -> None:
        if self.config.state_store:
            from .snapshots import open_store

            self.snapshots = await open_store(self.config.state_store, self.metrics)
            self.engine.attach_snapshots(self.snapshots)
            await self._report_store()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval)
            self.engine.reap()
            await self._report_store()

    async def _report_store(self) -> None:
        if self.snapshots is not None and self.on_store_health is not None:
            await self.on_store_health(bool(self.snapshots.healthy))

    async def drain(self, timeout: float) -> None:
        """Snapshot what is unsaved (with --state-store) and wait up to ``timeout`` s for the writes."""
        await self.engine.drain(timeout)

    async def close(self) -> None:
        if self.snapshots is not None:
            await self.snapshots.close()
        if self._reaper:
            self._reaper.cancel()
        self.engine.close()
