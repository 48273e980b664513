"""Client tests: a real server process (``python -m lstm_service``, the
tiny model, port 0) and, where a test needs to see or break the traffic, a
real gRPC relay in front of it (relay.py). ``async def`` tests run in a
fresh event loop each (no pytest-asyncio needed), capped at 60 s.
"""
from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
from relay import Relay

from tools.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), 60))
        return True
    return None


@pytest.fixture(scope="session")
def server(tiny_model_dir):
    process = ServerProcess(["--model", str(tiny_model_dir), "--device", "cpu", "--log-format", "text", "--grace", "1"])
    yield process
    process.stop()


@pytest.fixture
def relay(server):
    """A gRPC relay to the server that records each call's x-session-id and can drop a request or a reply."""
    with Relay(server.target) as r:
        yield r
