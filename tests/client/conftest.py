"""Client tests: a real server process (``python -m lstm_service``, the
tiny model, port 0) and, where a test needs to see or break the traffic, a
real gRPC relay in front of it (relay.py). ``async def`` tests run in a
fresh event loop each (no pytest-asyncio needed), capped at 60 s.
"""
from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from relay import Relay

ROOT = Path(__file__).resolve().parents[2]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), 60))
        return True
    return None


class ServerProcess:
    """``python -m lstm_service`` on a free port; ``target`` once it logged "started"."""

    def __init__(self, model_dir: Path) -> None:
        cmd = [sys.executable, "-m", "lstm_service", "--model", str(model_dir), "--host", "127.0.0.1", "--port", "0",
               "--device", "cpu", "--log-format", "text", "--grace", "1"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.lines: list = []
        started = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                if " started " in line:
                    started.set()

        threading.Thread(target=read, daemon=True).start()
        if not started.wait(60):
            self.proc.kill()
            raise AssertionError("server did not start:\n" + "".join(self.lines))
        line = next(x for x in self.lines if " started " in x)
        self.target = re.search(r"address=(\S+)", line).group(1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def server(tiny_model_dir):
    process = ServerProcess(tiny_model_dir)
    yield process
    process.stop()


@pytest.fixture
def relay(server):
    """A gRPC relay to the server that records each call's x-session-id and can drop a request or a reply."""
    with Relay(server.target) as r:
        yield r
