"""Helpers for the deployment tests (imported as ``deploy_helpers``).

The compose topology as plain processes: ``python -m lstm_service`` replicas,
each on its own loopback address (127.0.0.2, .3, ...) and one port, as
containers each have their own address; HAProxy on deploy/haproxy.cfg with
the proxy image's own PROXY_* defaults; and a DNS stub standing in for
Docker's DNS, answering the replicas' name with one address per replica.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from dns_stub import DnsStub
from lstm_service.service.proc.healthcheck import check

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
PROXY_DOCKERFILE = ROOT / "deploy" / "proxy.Dockerfile"
REPLICAS_NAME = "replicas.lstm.test"


def find_haproxy() -> Optional[str]:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def clean_env() -> Dict[str, str]:
    """The test's environment without LSTM_*/PROXY_* settings a developer may have."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LSTM_", "PROXY_"))}


def proxy_image_env() -> Dict[str, str]:
    """The PROXY_* defaults the proxy image sets (its ENV instruction)."""
    text = re.sub(r"\\\n", " ", PROXY_DOCKERFILE.read_text())
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(PROXY_\w+)=(\S+)", line))
    return env


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
    host: str
    port: int
    metrics_port: int
    log: Path
    proc: subprocess.Popen

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def active_sessions(self) -> float:
        with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        return next(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith("lstm_active_sessions "))


def start_replica(model_dir: Path, workdir: Path, host: str, port: int) -> Replica:
    metrics_port = free_port(host)
    log = workdir / f"replica-{host}.log"
    cmd = [sys.executable, "-m", "lstm_service", "--model", str(model_dir), "--host", host,
           "--port", str(port), "--metrics-port", str(metrics_port), "--device", "cpu", "--grace", "2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    return Replica(host, port, metrics_port, log, proc)


@dataclass
class Proxy:
    port: int
    health_port: int
    proc: subprocess.Popen
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def healthz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code


def start_proxy(haproxy: str, dns: DnsStub, replica_port: int, workdir: Path) -> Proxy:
    """HAProxy on deploy/haproxy.cfg: the image's defaults, local addresses."""
    port, health_port = free_port(), free_port()
    env = {**clean_env(), **proxy_image_env(),
           "PROXY_LISTEN": f"127.0.0.1:{port}", "PROXY_HEALTH_LISTEN": f"127.0.0.1:{health_port}",
           "PROXY_REPLICAS": f"{REPLICAS_NAME}:{replica_port}", "PROXY_DNS": dns.address,
           "PROXY_SHUTDOWN_TIMEOUT": "5s"}
    log = workdir / "haproxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([haproxy, "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    return Proxy(port, health_port, proc, log)


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
def topology(model_dir: Path, workdir: Path, haproxy: str, replicas: int = 3):
    """Start ``replicas`` services, the DNS stub and HAProxy in front; stop all after."""
    started: List[Replica] = []
    proxy, dns = None, None
    port = free_port()
    try:
        started = [start_replica(model_dir, workdir, f"127.0.0.{2 + i}", port) for i in range(replicas)]
        for r in started:
            wait_until(lambda r=r: serving(r.target), 60, f"replica on {r.target} never served", r.proc, r.log)
        dns = DnsStub(REPLICAS_NAME, [r.host for r in started])
        proxy = start_proxy(haproxy, dns, port, workdir)
        wait_until(lambda: serving(proxy.target) and proxy.healthz() == 200, 20,
                   "no health answer through HAProxy", proxy.proc, proxy.log)
        yield started, proxy, dns
    finally:
        if proxy is not None:
            stop(proxy.proc, signal.SIGUSR1)
        for r in started:
            stop(r.proc)
        if dns is not None:
            dns.close()
