"""``python -m bench --proxy``: what the session-affine proxy costs.

One service process, and HAProxy on deploy/haproxy.cfg (the proxy image's
settings) in front of it; the same client processes drive the service
directly and through HAProxy, point by point, back to back, so background
load hits both alike. Prints msg/s and p50/p99 for each, and the difference.

HAProxy finds the replica by DNS as in compose; a DNS stub on 127.0.0.1
(tests/deploy/dns_stub.py) answers its name with 127.0.0.1.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List

from .load import ClientPool
from .machine import facts
from .report import write_mode
from .procs import ROOT, ServiceProcess, free_port
from .run import measure_point

HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
PROXY_DOCKERFILE = ROOT / "deploy" / "proxy.Dockerfile"


def _dns_stub():
    spec = importlib.util.spec_from_file_location("dns_stub", ROOT / "tests" / "deploy" / "dns_stub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DnsStub


def image_env() -> dict:
    """The PROXY_* defaults the proxy image sets."""
    text = re.sub(r"\\\n", " ", PROXY_DOCKERFILE.read_text())
    return dict(kv for line in text.splitlines() if line.startswith("ENV ")
                for kv in re.findall(r"(PROXY_\w+)=(\S+)", line))


class HAProxy:
    def __init__(self, haproxy: str, replica_port: int) -> None:
        self.dns = _dns_stub()("replica.bench.test", ["127.0.0.1"])
        self.port = free_port()
        env = {**os.environ, **image_env(), "PROXY_LISTEN": f"127.0.0.1:{self.port}",
               "PROXY_HEALTH_LISTEN": f"127.0.0.1:{free_port()}", "PROXY_DNS": self.dns.address,
               "PROXY_REPLICAS": f"replica.bench.test:{replica_port}", "PROXY_LOG_LEVEL": "warning",
               "PROXY_SHUTDOWN_TIMEOUT": "2s"}
        self.log = tempfile.NamedTemporaryFile(prefix="bench-haproxy-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([haproxy, "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.target = f"127.0.0.1:{self.port}"
        self.pid = self.proc.pid

    def wait_serving(self, timeout: float = 20.0) -> None:
        from lstm_service.service.proc.healthcheck import check

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if check(self.target, timeout=1.0)[0]:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"HAProxy never served on {self.target}: {Path(self.log.name).read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(15)
            self.proc.wait(10)
        self.dns.close()


def table(rows: List[dict]) -> str:
    lines = ["| streams | direct msg/s | proxy msg/s | direct p50 / p99 ms | proxy p50 / p99 ms | added p50 ms |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        d, p = r["direct"], r["proxy"]
        lines.append(f"| {r['streams']} | {d['msgs_per_s']:.0f} | {p['msgs_per_s']:.0f} | "
                     f"{d['latency_ms']['p50']:.2f} / {d['latency_ms']['p99']:.2f} | "
                     f"{p['latency_ms']['p50']:.2f} / {p['latency_ms']['p99']:.2f} | "
                     f"{p['latency_ms']['p50'] - d['latency_ms']['p50']:+.2f} |")
    return "\n".join(lines)


def main(args, parser, server_args: List[str], streams: List[int], warmup: float, duration: float) -> int:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        parser.error("--proxy needs haproxy (Debian: apt-get install haproxy)")
    machine = facts()  # before the load: its loadavg is the background the figures ran on
    server = ServiceProcess.start(server_args)
    proxy = None
    rows = []
    try:
        proxy = HAProxy(haproxy, int(server.target.rpartition(":")[2]))
        proxy.wait_serving()
        with ClientPool(args.clients, args.streams_per_channel, args.top_k, args.parse_responses) as pool:
            for n in streams:
                print(f"streams {n}: direct, then through HAProxy ...", flush=True)
                direct = measure_point(pool, server.target, n, 1, warmup, duration, server.pid)
                through = measure_point(pool, proxy.target, n, 1, warmup, duration, server.pid)
                rows.append({"streams": n, "tokens_per_message": 1, "direct": direct, "proxy": through})
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()
    text = table(rows)
    print(text)
    write_mode(Path(args.out), "proxy", text, {"haproxy": haproxy, "rows": rows}, machine)
    return 0
