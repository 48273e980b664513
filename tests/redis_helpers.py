"""A real redis-server (the Debian package) for tests: started on a free
loopback port in a temporary directory with persistence off, stopped and
restarted on the same port by the test, killed at the end.

Tests that need it skip with the reason when /usr/bin/redis-server is absent
(``.ci/run`` installs it: ``apt-get install redis-server``)."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

REDIS_BINARY = shutil.which("redis-server")
NEEDS_REDIS = pytest.mark.skipif(
    REDIS_BINARY is None, reason="redis-server is not installed (apt-get install redis-server)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server process; ``url`` stays the same across stop/start."""

    def __init__(self, workdir: Path, port: Optional[int] = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "RedisServer":
        assert REDIS_BINARY, "redis-server is not installed"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS_BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "redis.log").open("ab"))
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (
                f"redis-server exited: {(self.workdir / 'redis.log').read_text()[-500:]}")
            if self.ping():
                return
            time.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not answer PING in {timeout} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (RESP), its raw reply: for checks independent of redis-py."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(1 << 20)

    def get(self, key: str) -> Optional[bytes]:
        """GET over a raw socket: the value's bytes, or None when the key is absent."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key.encode()), key.encode()))
            reply = b""
            while b"\r\n" not in reply:
                reply += sock.recv(65536)
            head, _, rest = reply.partition(b"\r\n")
            if head == b"$-1":
                return None
            assert head.startswith(b"$"), f"unexpected GET reply {head!r}"
            size = int(head[1:])
            while len(rest) < size + 2:
                chunk = sock.recv(65536)
                assert chunk, "connection closed mid-reply"
                rest += chunk
            return rest[:size]

    def stop(self) -> None:
        """Kill it (SIGKILL: an outage, not a shutdown) and wait for the port to close."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: it keeps its port and accepts connections but answers nothing (a hung Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """For a fixture: ``yield from running_redis(tmp_path)``; skips the test when redis-server is absent."""
    if REDIS_BINARY is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(workdir / "redis").start()
    try:
        yield server
    finally:
        server.stop()  # SIGKILL ends a paused (SIGSTOPped) server too
