"""Helpers for the deployment tests (imported as ``deploy_helpers``).

The compose topology as plain processes: ``python -m lstm_service`` replicas on
127.0.0.1 free ports and the proxy container's own entrypoint
(deploy/proxy.py run) driving Debian's nginx with deploy/nginx.conf.template.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from lstm_service.service.healthcheck import check

ROOT = Path(__file__).resolve().parents[2]
PROXY = ROOT / "deploy" / "proxy.py"


def load_proxy_module():
    """deploy/proxy.py as a module (deploy/ is not a package: it is copied into the proxy image)."""
    spec = importlib.util.spec_from_file_location("lstm_deploy_proxy", PROXY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_nginx() -> Optional[str]:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> Dict[str, str]:
    """The test's environment without LSTM_*/PROXY_* settings a developer may have."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LSTM_", "PROXY_"))}


def wait_until(predicate, timeout: float, what: str, proc: Optional[subprocess.Popen] = None, log: Path = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{what} (exit code {proc.poll() if proc else None})\n{tail}")


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15.0) -> Optional[int]:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@dataclass
class Replica:
    port: int
    metrics_port: int
    log: Path
    proc: subprocess.Popen

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def active_sessions(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        return next(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith("lstm_active_sessions "))


def start_replica(model_dir: Path, workdir: Path, index: int) -> Replica:
    port, metrics_port = free_port(), free_port()
    log = workdir / f"replica-{index}.log"
    cmd = [sys.executable, "-m", "lstm_service", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--metrics-port", str(metrics_port), "--device", "cpu", "--grace", "2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    return Replica(port, metrics_port, log, proc)


@dataclass
class Proxy:
    port: int
    prefix: Path
    proc: subprocess.Popen
    log: Path
    access_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.access_log = self.prefix / "access.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_proxy(nginx: str, upstreams: List[str], workdir: Path) -> Proxy:
    port = free_port()
    prefix = workdir / "nginx"
    prefix.mkdir()
    log = workdir / "proxy.log"
    cmd = [sys.executable, str(PROXY), "run", "--nginx", nginx, "--upstream", " ".join(upstreams),
           "--listen", f"127.0.0.1:{port}", "--prefix", str(prefix), "--workers", "1",
           "--error-log", str(prefix / "error.log"), "--access-log", str(prefix / "access.log"),
           "--log-level", "info", "--resolve-interval", "1", "--start-timeout", "10"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    return Proxy(port, prefix, proc, log)


def serving(target: str) -> bool:
    return check(target, timeout=1.0)[0]


def assert_matches(result, expected_row: np.ndarray, steps: int, what: str) -> None:
    """A step's last prediction agrees with the reference row after ``steps`` tokens."""
    assert result.steps == steps, f"{what}: server counts {result.steps} tokens, expected {steps}"
    top = result.predictions[-1].top
    assert len(top) == 5, what
    for cand in top:
        assert abs(cand.logprob - expected_row[cand.token]) < 2e-4, (
            f"{what}: token {cand.token} logprob {cand.logprob} vs single-process {expected_row[cand.token]}")
    assert expected_row[top[0].token] >= expected_row.max() - 2e-4, f"{what}: top-1 is not the argmax"


@contextlib.contextmanager
def topology(model_dir: Path, workdir: Path, nginx: str, replicas: int = 3):
    """Start ``replicas`` services and the proxy in front; stop all after."""
    started: List[Replica] = []
    proxy = None
    try:
        started = [start_replica(model_dir, workdir, i) for i in range(replicas)]
        for r in started:
            wait_until(lambda r=r: serving(r.target), 60, f"replica on {r.target} never served", r.proc, r.log)
        proxy = start_proxy(nginx, [r.target for r in started], workdir)
        wait_until(lambda: serving(proxy.target), 20, "no health answer through nginx", proxy.proc,
                   proxy.prefix / "error.log" if (proxy.prefix / "error.log").exists() else proxy.log)
        yield started, proxy
    finally:
        if proxy is not None:
            stop(proxy.proc)
        for r in started:
            stop(r.proc)
