"""Helpers for the service tests (imported as ``svc_helpers``): a real
grpc.aio server on 127.0.0.1 port 0 and a real channel. The expected
answers come from tests/reference.py, independent of the service code.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

from lstm_service.service.proc.app import App
from lstm_service.service.proc.config import Config
from lstm_service.service.core.engine import Engine
from lstm_service.service.link.messages import Ping
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc
from lstm_service.service.core.runtime import Runtime


class FakeClock:
    """An injectable monotonic clock that only moves when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class GatedRuntime:
    """The real onnxruntime runtime, but each run waits until ``gate`` is open.

    Lets a test hold the worker thread so steps pile up in the batcher's
    queue; the batcher under test is untouched.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.inner = runtime
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.shapes: list = []

    def __getattr__(self, name):  # card, providers, state_shape, ... of the real runtime
        return getattr(self.inner, name)

    def run(self, tokens, state, lengths=None):
        self.entered.set()
        assert self.gate.wait(20), "gate never opened"
        self.shapes.append(tokens.shape)
        return self.inner.run(tokens, state) if lengths is None else self.inner.run(tokens, state, lengths)


FRONTS_ENV = "LSTM_TEST_FRONTS"  # 1: every serving() below runs as a front process and an engine


def fronts_mode() -> bool:
    """Whether this run tests the front + engine split (make test-fronts) rather than one process."""
    return os.environ.get(FRONTS_ENV, "0") not in ("", "0")


@dataclass
class Served:
    app: App
    channel: grpc.aio.Channel
    stub: pb_grpc.LstmServiceStub
    port: int
    engine: Engine  # the engine that owns the sessions (in fronts mode: the engine side of the link)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    metrics: object = None  # the registry /metrics serves (in fronts mode: the engine's, with the fronts' counts)

    def state(self, session_id: str):
        """(steps, state, last_logprobs) as the server holds them (read straight from the
        engine's store: no call, no touch)."""
        session = self.engine.store.get(session_id)
        return session.steps, session.state, session.last_logprobs

    def session(self, session_id: str):
        """The session's record as the engine holds it (no call, no touch)."""
        return self.engine.store.info(self.engine.store.get(session_id))

    async def sync(self) -> None:
        """In fronts mode, one round trip over the link: every one-way message the front sent
        before it (commit, end, release) has been handled by the engine when it returns, so
        what the test then reads of the engine directly is what the next call would see."""
        if self.app.link is not None:
            await self.app.link.call(Ping("test", []))

    async def requests_counted(self, method: str, code: str, want: float, timeout: float = 3.0) -> Optional[float]:
        """lstm_requests_total{method, code}, once it reads ``want`` or ``timeout`` s have passed
        (in fronts mode a front's counts reach the engine's /metrics with its next ping)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
                "lstm_requests_total", {"method": method, "code": code})
            if value == want or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.05)


class EngineThread:
    """The engine side of --fronts (service/proc/engine_process.EngineProcess: the engine, its link
    and its lifecycle) on a thread with its own event loop, so a test can inject a clock or a
    runtime and read the engine's state, while the front under test talks to it over the
    real link. ``make test-fronts`` runs the service tests this way; tests/service/
    test_fronts.py starts the real processes."""

    def __init__(self, config: Config, clock, runtime) -> None:
        from lstm_service.service.proc.engine_process import EngineProcess
        from lstm_service.service.link.transport import new_address

        self.address = new_address()
        self.process = EngineProcess(config, self.address, clock, runtime)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="engine", daemon=True)
        self.thread.start()
        self._call(self.process.start())

    def _call(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self._call(self.process.stop(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.asynccontextmanager
async def serving(model_dir: Path, clock=None, runtime=None, **overrides):
    config = Config(model=str(model_dir), port=0, device="cpu", **overrides)
    engine_thread = None
    if fronts_mode():
        from lstm_service.service.link.engine_link import EngineLink, RequestCounts

        engine_thread = EngineThread(config, clock or time.monotonic, runtime)
        app = App(config, link=EngineLink(engine_thread.address, "front-test", counts=RequestCounts()))
        engine, metrics = engine_thread.process.engine, engine_thread.process.metrics
    else:
        app = App(config, clock=clock or time.monotonic, runtime=runtime)
        engine, metrics = app.engine, app.metrics
    try:
        port = await app.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield Served(app, channel, pb_grpc.LstmServiceStub(channel), port, engine, metrics)
        finally:
            await channel.close()
            await app.stop(grace=0)
    finally:
        if engine_thread is not None:
            engine_thread.stop()


def same_state(a, b) -> bool:
    """Two (steps, state, last) snapshots are identical (the very same arrays: nothing was rebuilt)."""
    return a[0] == b[0] and len(a[1]) == len(b[1]) and all(x is y for x, y in zip(a[1], b[1])) and a[2] is b[2]


async def open_stream(stub, session_id: str = "", create: bool = True, output: Optional[pb.OutputOptions] = None,
                      metadata=()):
    call = stub.Stream(metadata=metadata)
    open_ = pb.OpenStream(session_id=session_id, create=create)
    if output is not None:
        open_.output.CopyFrom(output)
    await call.write(pb.StreamRequest(open=open_))
    opened = await call.read()
    return call, opened.opened


async def stream_step(call, tokens=None, text: str = "", **output) -> pb.StepResult:
    step = pb.StreamStep(input=pb.Input(tokens=list(tokens or ()), text=text))
    if output:
        step.output.CopyFrom(pb.OutputOptions(**output))
    await call.write(pb.StreamRequest(step=step))
    response = await call.read()
    assert response is not grpc.aio.EOF
    return response.result
