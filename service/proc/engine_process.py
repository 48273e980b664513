"""The engine process of ``--fronts N`` (started by service/proc/supervisor.py): loads
the model once, owns every session's state, batches the steps of every front,
keeps snapshots (--state-store) and serves /metrics (--metrics-port) with the
fronts' request counts, which they send with their pings.

supervisor.STOP_SIGNAL: snapshot what is unsaved and exit 0 (the supervisor
sends it after the fronts have drained; SIGTERM and SIGINT are ignored).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from . import budget
from .config import Config
from ..link.engine_host import EngineHost
from ..api.errors import ConfigError
from .engine_life import card_of, build_engine
from .logs import event
from .supervisor import STOP_SIGNAL

log = logging.getLogger("service.engine")


class EngineProcess:
    def __init__(self, config: Config, address: str, clock=time.monotonic, runtime=None) -> None:
        self.config = config
        self.card = card_of(config)
        self.lifecycle = build_engine(config, self.card, clock, runtime)  # the store's health goes out with each pong
        self.engine, self.metrics = self.lifecycle.engine, self.lifecycle.metrics
        self.host = EngineHost(self.engine, address, self._status)
        self.host.on_requests = self._count_requests

    def _status(self) -> dict:
        return {"store": self.lifecycle.store_healthy}

    def _count_requests(self, front: str, counts: list) -> None:
        for method, code, n in counts:
            self.metrics.requests.labels(method, code).inc(n)
            self.metrics.front_requests.labels(front).inc(n)

    async def start(self) -> None:
        await self.lifecycle.open()
        await self.host.start()
        metrics_port = self.metrics.serve(self.config.metrics_port, self.config.host)
        c, rt = self.config, self.engine.runtime
        event(log, "engine_started", link=self.host.address, model=self.card.name, precision=rt.precision,
              providers=",".join(rt.providers), onnx=str(rt.path), max_batch=c.max_batch,
              ort_threads=c.ort_threads, metrics_port=metrics_port or "off")

    async def stop(self, timeout: float = 5.0) -> None:
        await self.lifecycle.drain(timeout)
        self.host.close()
        await self.lifecycle.close()
        self.metrics.close()
        event(log, "engine_stopped", sessions=self.engine.session_count())


async def serve_engine(config: Config, address: str) -> int:
    try:
        process: Optional[EngineProcess] = EngineProcess(config, address)
        assert process is not None
        await process.start()
    except ConfigError as exc:
        event(log, "startup_failed", logging.ERROR, error=str(exc))
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(STOP_SIGNAL, stop.set)
    budget.install(loop)  # LSTM_BUDGET set: SIGUSR2 dumps the cost timers (python -m bench --budget)
    await stop.wait()
    await process.stop()
    return 0
