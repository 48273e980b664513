"""The engine that owns the sessions, built and run for as long as its process
lives: ``build_engine`` makes it (onnxruntime session, metrics, session events
logged and counted) for both owners of state, the single-process server
(proc/app.py) and the engine process of ``--fronts N`` (proc/engine_process.py);
``EngineLifecycle`` opens the snapshot store (with --state-store) and hands it to
the engine, which alone holds it, runs the reaper that ends expired sessions and
writes idle ones, drains and closes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Optional

from lstm_service.model.card import ModelCardError, load_card

from .config import Config
from ..core.engine import Engine
from ..api.errors import ConfigError
from .logs import event
from .metrics import Metrics
from ..core.runtime import Runtime

log = logging.getLogger("service.sessions")  # session_* events, from whichever process owns the sessions


def card_of(config: Config):
    """The served model's card; ConfigError (one line, exit 2) if it is missing or broken."""
    try:
        return load_card(config.model)
    except ModelCardError as exc:
        raise ConfigError(str(exc)) from exc


def build_engine(config: Config, card, clock: Callable[[], float] = time.monotonic, runtime=None,
                 on_store_health: Optional[Callable[[bool], Awaitable[None]]] = None) -> "EngineLifecycle":
    """The onnxruntime session, the metrics and the Engine that owns every session (each
    session's start and end logged and counted), in its lifecycle."""
    metrics = Metrics()

    def session_event(kind: str, session, why: str) -> None:
        event(log, f"session_{kind}", owner=session.owner, id=session.id, steps=session.steps, reason=why)
        metrics.session_event(kind)

    engine = Engine(config, card, runtime or Runtime.from_config(card, config), metrics, clock, session_event)
    metrics.track_sessions(engine.session_count)
    return EngineLifecycle(engine, config, metrics, on_store_health)


class EngineLifecycle:
    def __init__(self, engine: Engine, config, metrics,
                 on_store_health: Optional[Callable[[bool], Awaitable[None]]] = None) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self.on_store_health = on_store_health  # the store's health as its own grpc.health service
        self._reaper: Optional[asyncio.Task] = None

    @property
    def store_healthy(self) -> Optional[bool]:
        """None without a store."""
        return self.engine.store_healthy

    async def open(self) -> None:
        if self.config.state_store:
            from ..persist.snapshots import open_store

            self.engine.attach_snapshots(await open_store(self.config.state_store, self.metrics),
                                         self.config.state_store)
            assert self.engine.durability is not None
            await self.engine.durability.start()
            await self._report_store()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval)
            self.engine.reap()
            await self._report_store()

    async def _report_store(self) -> None:
        healthy = self.engine.store_healthy
        if healthy is not None and self.on_store_health is not None:
            await self.on_store_health(healthy)

    async def drain(self, timeout: float) -> None:
        """Snapshot what is unsaved (with --state-store) and wait up to ``timeout`` s for the writes."""
        await self.engine.drain(timeout)

    async def close(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        await self.engine.close_snapshots()
        self.engine.close()
