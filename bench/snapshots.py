"""``python -m bench --snapshots``: what Redis snapshots cost the step path.

Two service processes on the same model, one memory-only, one with
``--state-store`` on a redis-server of its own (Debian package, temporary
directory, persistence off) and the default snapshot policy (--snapshot-every,
--snapshot-idle-seconds as the service ships them). The same client
processes drive one, then the other, back to back, then again in the other
order, so background load hits both alike and a drift shows up as a
difference between the two orders. Prints steps/s (1 token per message) and
p50/p99 for each, and the snapshots written per second during the window.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from .load import ClientPool
from .machine import facts
from .report import write_mode
from .procs import ServiceProcess, free_port
from .run import measure_point
from .scrape import scrape

WRITTEN = re.compile(r'^lstm_snapshot_writes_total\{result="written"\} (\S+)$', re.M)


class RedisProcess:
    """redis-server on a free loopback port, persistence off, in a temporary directory."""

    def __init__(self, binary: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir.name,
                                      "--save", "", "--appendonly", "no", "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait()

    def _wait(self, timeout: float = 10.0) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.dir.cleanup()


def snapshots_written(text: Optional[str]) -> float:
    match = WRITTEN.search(text or "")
    return float(match.group(1)) if match else 0.0


def _us(row: dict) -> str:
    return "-" if row.get("server_us_per_msg") is None else f"{row['server_us_per_msg']:.0f}"


def table(rows: List[dict]) -> str:
    # server CPU per step: less sensitive than steps/s to whatever else loads the machine
    lines = ["| streams | order | store off steps/s | store on steps/s | change | off p50 / p99 ms | on p50 / p99 ms "
             "| server CPU us/step off / on | snapshots/s |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        off, on = r["off"], r["on"]
        change = 100.0 * (on["msgs_per_s"] / off["msgs_per_s"] - 1.0) if off["msgs_per_s"] else float("nan")
        lines.append(f"| {r['streams']} | {r['order']} | {off['msgs_per_s']:.0f} | {on['msgs_per_s']:.0f} | "
                     f"{change:+.1f}% | "
                     f"{off['latency_ms']['p50']:.2f} / {off['latency_ms']['p99']:.2f} | "
                     f"{on['latency_ms']['p50']:.2f} / {on['latency_ms']['p99']:.2f} | "
                     f"{_us(off)} / {_us(on)} | {r['snapshots_per_s']:.0f} |")
    return "\n".join(lines)


def _measure(pool, stored: ServiceProcess, plain: ServiceProcess, n: int, warmup: float, duration: float,
             on_first: bool) -> dict:
    """One off/on pair; ``on_first`` swaps the order, so a drift in background load shows as a
    difference between the two orders rather than as a cost of the store."""
    before = scrape(stored.metrics_url)
    started = time.monotonic()
    row = {}
    for side in (("on", "off") if on_first else ("off", "on")):
        server = stored if side == "on" else plain
        row[side] = measure_point(pool, server.target, n, 1, warmup, duration, server.pid)
    # over both points, warm-ups included: the counter cannot be split at the window's edges
    # (the memory-only server never writes, so this is the store-on server's rate over twice its time)
    written = snapshots_written(scrape(stored.metrics_url)) - snapshots_written(before)
    rate = 2 * written / (time.monotonic() - started)
    return {"streams": n, "tokens_per_message": 1, "order": "on, off" if on_first else "off, on", **row,
            "snapshots_per_s": rate}


def main(args, parser, server_args: List[str], streams: List[int], warmup: float, duration: float) -> int:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).is_file():
        parser.error("--snapshots needs redis-server (Debian: apt-get install redis-server)")
    redis = RedisProcess(binary)
    plain = stored = None
    rows = []
    try:
        plain = ServiceProcess.start(server_args)
        stored = ServiceProcess.start([*server_args, "--state-store", redis.url])
        with ClientPool(args.clients, args.streams_per_channel, args.top_k, args.parse_responses) as pool:
            for n in streams:
                for on_first in (False, True):
                    print(f"streams {n}: store {'on, then off' if on_first else 'off, then on'} ...", flush=True)
                    rows.append(_measure(pool, stored, plain, n, warmup, duration, on_first))
    finally:
        for service in (plain, stored):
            if service is not None:
                service.stop()
        redis.stop()
    text = table(rows)
    print(text)
    write_mode(Path(args.out), "snapshots", text, {"server_args": server_args, "rows": rows}, facts())
    return 0
