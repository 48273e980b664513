"""Helpers for the service tests (imported as ``svc_helpers``): a real
grpc.aio server on 127.0.0.1 port 0 and a real channel. The expected
answers come from tests/reference.py, independent of the service code.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

from lstm_service.service.app import App
from lstm_service.service.config import Config
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc
from lstm_service.service.runtime import Runtime


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

    def run(self, tokens, state):
        self.entered.set()
        assert self.gate.wait(20), "gate never opened"
        self.shapes.append(tokens.shape)
        return self.inner.run(tokens, state)


@dataclass
class Served:
    app: App
    channel: grpc.aio.Channel
    stub: pb_grpc.LstmServiceStub
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def state(self, session_id: str):
        """(steps, state, last_logprobs) as the server holds them."""
        return self.app.engine.snapshot(session_id)


@contextlib.asynccontextmanager
async def serving(model_dir: Path, clock=None, runtime=None, **overrides):
    config = Config(model=str(model_dir), port=0, device="cpu", **overrides)
    app = App(config, clock=clock or time.monotonic, runtime=runtime)
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(app, channel, pb_grpc.LstmServiceStub(channel), port)
    finally:
        await channel.close()
        await app.stop(grace=0)


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
