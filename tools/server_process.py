"""The server as a child process, for the latency probe, the benchmark and the
tests: one way to start ``python -m lstm_service`` and wait until it serves.

    with ServerProcess(["--model", "models/shakespeare"]) as server:
        Client(server.target) ...      # SERVING; stderr goes to a log file, shown if it fails

It listens on a free 127.0.0.1 port (``server.port``); ``stop()`` sends
SIGTERM (the server drains) and kills it only if it does not exit in time.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ChildProcess:
    """A child process whose stderr goes to a log file, shown when it fails."""

    def __init__(self, argv: List[str], name: str, env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=self.log,
                                     env=dict(os.environ, **(env or {})), text=True)
        self.pid = self.proc.pid

    output = ""  # the process's stderr, once stopped

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.closed:
            self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def fail(self, why: str) -> None:
        self.stop()
        raise RuntimeError(f"{self.name}: {why}\n--- last lines of its log ({self.log.name}) ---\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``timeout`` s; the exit status. A clean exit removes the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()
        self.output = Path(self.log.name).read_text(errors="replace")  # the whole log, kept after it is removed
        if self.proc.returncode == 0:
            Path(self.log.name).unlink(missing_ok=True)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ServerProcess(ChildProcess):
    """``python -m lstm_service`` on a free loopback port (or ``port``), once SERVING."""

    def __init__(self, server_args: Sequence[str] = (), port: int = 0, timeout: float = 90.0,
                 env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
                 root_certificates: Optional[bytes] = None) -> None:
        self.port = port or free_port()
        self.root_certificates = root_certificates  # a TLS server (--tls-cert): the CA its health is checked with
        self.target = f"127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "lstm_service", "--host", "127.0.0.1", "--port", str(self.port), *server_args]
        super().__init__(argv, "lstm-serve", env, cwd)
        self.wait_serving(timeout)

    def wait_serving(self, timeout: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        channel = (grpc.secure_channel(self.target, grpc.ssl_channel_credentials(self.root_certificates))
                   if self.root_certificates else grpc.insecure_channel(self.target))
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self.fail(f"exited with status {self.proc.returncode} before serving")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.fail(f"not SERVING on {self.target} after {timeout:.0f} s")

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
