"""Subprocesses the benchmark drives, and what it reads about them from /proc.

    server = ServiceProcess.start(["--model", "models/shakespeare"])   # waits for SERVING
    cpu = CpuMeter(server.pid); ...; cpu.cores()                       # CPU-s per wall-s
    server.stop()

Linux only (/proc). CPU time is utime+stime of the process (all its
threads); memory is VmRSS sampled in a thread, plus the kernel's VmHWM.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from lstm_service.service.process import ChildProcess, ServerProcess, free_port

TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


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


class Subprocess(ChildProcess):
    """A child process run from the repository root (bench.echo lives there), stderr to a log."""

    def __init__(self, argv: List[str], name: str) -> None:
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        super().__init__(argv, f"bench-{name}", env, str(ROOT))

    def peak_rss_kb(self) -> int:
        """The kernel's high-water mark of resident memory over the process's life."""
        try:
            return memory_kb(self.pid, "VmHWM")
        except OSError:
            return 0


class ServiceProcess(ServerProcess):
    """``python -m lstm_service`` on a free 127.0.0.1 port, with its metrics port (service/process.py)."""

    peak_rss_kb = Subprocess.peak_rss_kb

    @classmethod
    def start(cls, server_args: List[str], timeout: float = 90.0) -> "ServiceProcess":
        metrics_port = free_port()
        self = cls(["--metrics-port", str(metrics_port), "--log-level", "WARNING", "--grace", "2", *server_args],
                   timeout=timeout, cwd=str(ROOT))
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        return self


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
