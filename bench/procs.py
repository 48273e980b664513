"""Subprocesses the benchmark drives, and what it reads about them from /proc.

    server = ServiceProcess.start(["--model", "models/shakespeare"])   # waits for SERVING
    cpu = CpuMeter(server.pid).start(); ...; cpu.stop().cores()        # CPU-s per wall-s, process tree
    cpu.cores_by_process()             # {"supervisor": 0.0, "engine": 0.9, "front-0": 0.8}
    server.stop()

Linux only (/proc). CPU time is utime+stime of the process and its
descendants (all their threads): with ``--fronts`` the server pid is a
nearly idle supervisor and the work is in its children. Memory is their
VmRSS summed, sampled in a thread, plus the kernel's VmHWM.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tools.server_process import ChildProcess, ServerProcess, free_port

TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> Tuple[float, int]:
    """utime + stime of a process, in seconds, and its start time (ticks after boot)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS, int(fields[19])


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


def children(pid: int) -> List[int]:
    """Direct children of ``pid``: the kernel lists them per thread that forked them."""
    out: List[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass  # the thread (or the process) ended meanwhile
    return out


def tree(pid: int) -> List[int]:
    """``pid`` and all its descendants, parents before children."""
    pids = [pid]
    for p in pids:
        pids += children(p)
    return pids


def role(pid: int) -> Optional[str]:
    """A server child's role, from the environment its supervisor started it with:
    "engine" or "front-<i>" (service/proc/supervisor.py); None for any other process."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.partition(b"=")[::2] for kv in f.read().split(b"\0") if kv)
    except OSError:
        return None
    name = env.get(b"LSTM_ROLE", b"").decode()
    if name == "front":
        return f"front-{env.get(b'LSTM_FRONT_INDEX', b'?').decode()}"
    return name or None


@dataclass
class _Sample:
    name: str
    cpu: float  # utime + stime so far, seconds
    rss_kb: int


@dataclass
class CpuMeter:
    """CPU use of a process and all its descendants over a window, in total and per process
    (named by role: "supervisor", "engine", "front-0", ..., or "server" for a process alone),
    and the peak of their RSS (summed, and per name) sampled meanwhile.

    A process that ends inside the window counts with its last sample (up to ``interval``
    of its CPU is lost); one born inside the window counts all its CPU.
    """

    pid: int
    interval: float = 0.1
    _t0: float = 0.0
    _t1: float = 0.0
    _first: Dict[Tuple[int, int], _Sample] = field(default_factory=dict)
    _last: Dict[Tuple[int, int], _Sample] = field(default_factory=dict)
    _used: Dict[str, float] = field(default_factory=dict)
    _names: Dict[Tuple[int, int], str] = field(default_factory=dict)
    peak_rss_kb: int = 0
    peak_rss_kb_by_process: Dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def _name(self, key: Tuple[int, int], pids: List[int]) -> str:
        if key not in self._names:  # a process's role never changes: read its environment once
            pid = key[0]
            named = role(pid)
            if named is None and pid == self.pid:
                named = "supervisor" if len(pids) > 1 else "server"
            self._names[key] = named or "other"
        return self._names[key]

    def _read(self) -> Dict[Tuple[int, int], _Sample]:
        """The tree now, keyed by (pid, start time) so a reused pid is another process."""
        pids = tree(self.pid)
        samples = {}
        for pid in pids:
            try:
                cpu, started = cpu_seconds(pid)
                rss = memory_kb(pid)
            except OSError:
                continue  # ended since the tree was read
            key = (pid, started)
            samples[key] = _Sample(self._name(key, pids), cpu, rss)
        return samples

    def start(self) -> "CpuMeter":
        self._t0, self._first = time.monotonic(), self._read()
        self._last = dict(self._first)
        self._note_rss(self._first)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = self._read()
            if not now:
                return  # the whole tree is gone
            self._last.update(now)
            self._note_rss(now)

    def _note_rss(self, samples: Dict[Tuple[int, int], _Sample]) -> None:
        by_name: Dict[str, int] = {}
        for sample in samples.values():
            by_name[sample.name] = by_name.get(sample.name, 0) + sample.rss_kb
        self.peak_rss_kb = max(self.peak_rss_kb, sum(by_name.values()))
        for name, kb in by_name.items():
            self.peak_rss_kb_by_process[name] = max(self.peak_rss_kb_by_process.get(name, 0), kb)

    def stop(self) -> "CpuMeter":
        self._t1, final = time.monotonic(), self._read()
        self._stop.set()
        if self._thread:
            self._thread.join()
        used: Dict[str, float] = {}
        for key, last in {**self._last, **final}.items():
            first = self._first.get(key)
            used[last.name] = used.get(last.name, 0.0) + last.cpu - (first.cpu if first else 0.0)
        self._used = used
        return self

    def cores_by_process(self) -> Dict[str, float]:
        """CPU-s per wall-s of each named process (processes with one name summed)."""
        wall = self._t1 - self._t0
        return {name: (cpu / wall if wall > 0 else 0.0) for name, cpu in sorted(self._used.items())}

    def cores(self) -> float:
        return sum(self.cores_by_process().values())


class Subprocess(ChildProcess):
    """A child process run from the repository root (bench.echo lives there), stderr to a log."""

    def __init__(self, argv: List[str], name: str) -> None:
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        super().__init__(argv, f"bench-{name}", env, str(ROOT))

    def peak_rss_kb(self) -> int:
        """The kernel's high-water marks of resident memory over the lives of the process and
        its descendants, summed (an upper bound: they need not have peaked together)."""
        total = 0
        for pid in tree(self.pid):
            try:
                total += memory_kb(pid, "VmHWM")
            except OSError:
                pass
        return total


class ServiceProcess(ServerProcess):
    """``python -m lstm_service`` on a free 127.0.0.1 port, with its metrics port (tools/server_process.py)."""

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
