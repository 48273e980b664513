"""Subprocesses the benchmark drives, and what it reads about them from /proc.

    server = ServiceProcess.start(["--model", "models/shakespeare"])   # waits for SERVING
    cpu = CpuMeter(server.pid); ...; cpu.cores()                       # CPU-s per wall-s
    server.stop()

Linux only (/proc). CPU time is utime+stime of the process (all its
threads); memory is VmRSS sampled in a thread, plus the kernel's VmHWM.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle, all cores together."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / TICKS


def memory_kb(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class CpuMeter:
    """CPU use of one process over a window, and its peak RSS sampled meanwhile."""

    pid: int
    interval: float = 0.1
    _t0: float = 0.0
    _c0: float = 0.0
    _t1: float = 0.0
    _c1: float = 0.0
    peak_rss_kb: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def start(self) -> "CpuMeter":
        self._t0, self._c0 = time.monotonic(), cpu_seconds(self.pid)
        self.peak_rss_kb = memory_kb(self.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak_rss_kb = max(self.peak_rss_kb, memory_kb(self.pid))
            except OSError:
                return

    def stop(self) -> "CpuMeter":
        self._t1, self._c1 = time.monotonic(), cpu_seconds(self.pid)
        self._stop.set()
        if self._thread:
            self._thread.join()
        return self

    def cores(self) -> float:
        wall = self._t1 - self._t0
        return (self._c1 - self._c0) / wall if wall > 0 else 0.0


class Subprocess:
    """A child process whose stderr goes to a log file, shown when it fails."""

    def __init__(self, argv: List[str], name: str) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            argv, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=self.log, env=env, text=True
        )
        self.pid = self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.closed:
            self.log.flush()
        text = Path(self.log.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def fail(self, why: str) -> None:
        self.stop()
        raise RuntimeError(f"{self.name}: {why}\n--- last lines of its log ({self.log.name}) ---\n{self.log_tail()}")

    def peak_rss_kb(self) -> int:
        """The kernel's high-water mark of resident memory over the process's life."""
        try:
            return memory_kb(self.pid, "VmHWM")
        except OSError:
            return 0

    def stop(self, timeout: float = 15.0) -> Optional[int]:
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
        if self.proc.returncode == 0:  # a clean exit leaves no log behind
            Path(self.log.name).unlink(missing_ok=True)
        return self.proc.returncode


class ServiceProcess(Subprocess):
    """``python -m lstm_service`` on a free 127.0.0.1 port, with its metrics port."""

    @classmethod
    def start(cls, server_args: List[str], timeout: float = 90.0) -> "ServiceProcess":
        port, metrics_port = free_port(), free_port()
        argv = [sys.executable, "-m", "lstm_service", "--host", "127.0.0.1", "--port", str(port),
                "--metrics-port", str(metrics_port), "--log-level", "WARNING", "--grace", "2", *server_args]
        self = cls(argv, "service")
        self.target = f"127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
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


class EchoProcess(Subprocess):
    """``python -m bench.echo``: the bare gRPC floor, same messages, no model."""

    @classmethod
    def start(cls, timeout: float = 30.0) -> "EchoProcess":
        port = free_port()
        self = cls([sys.executable, "-m", "bench.echo", "--port", str(port)], "echo")
        self.target = f"127.0.0.1:{port}"
        ready = threading.Event()
        threading.Thread(target=lambda: (self.proc.stdout.readline(), ready.set()), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.fail("did not start")
        return self
