"""``python -m bench --snapshots``: what Redis snapshots cost the step path.

Three service processes on the same model: one memory-only, one with
``--state-store`` on a redis-server of its own (Debian package, temporary
directory, persistence off) and the default snapshot policy (--snapshot-every,
--snapshot-idle-seconds as the service ships them), and one in write-through
mode (``--snapshot-every 1``: every step's fenced write awaited before its reply,
docs/durability.md). The same client processes drive each in turn, back to back,
then again in the reverse order, so background load hits them alike and a drift
shows up as a difference between the two orders. Prints steps/s (1 token per
message), p50/p99, server CPU per step for each, and the snapshots written per
second by the default and the write-through server during the window.
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


SIDES = ("off", "on", "through")  # memory only; the default snapshot policy; write-through


def _pct(side: dict, off: dict) -> str:
    return f"{100.0 * (side['msgs_per_s'] / off['msgs_per_s'] - 1.0):+.1f}%" if off["msgs_per_s"] else "-"


def table(rows: List[dict]) -> str:
    # server CPU per step: less sensitive than steps/s to whatever else loads the machine
    lines = ["| streams | order | store off steps/s | store on steps/s | change | write-through steps/s | change "
             "| off / on / through p50 ms | off / on / through p99 ms | server CPU us/step off / on / through "
             "| snapshots/s on / through |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        off, on, through = (r[side] for side in SIDES)
        lines.append(f"| {r['streams']} | {r['order']} | {off['msgs_per_s']:.0f} | {on['msgs_per_s']:.0f} | "
                     f"{_pct(on, off)} | {through['msgs_per_s']:.0f} | {_pct(through, off)} | "
                     + " / ".join(f"{s['latency_ms']['p50']:.2f}" for s in (off, on, through)) + " | "
                     + " / ".join(f"{s['latency_ms']['p99']:.2f}" for s in (off, on, through)) + " | "
                     f"{_us(off)} / {_us(on)} / {_us(through)} | "
                     f"{r['snapshots_per_s']:.0f} / {r['through_snapshots_per_s']:.0f} |")
    return "\n".join(lines)


def _rate(server: ServiceProcess, measure) -> tuple:
    """``measure()``'s result and the snapshots ``server`` wrote per second meanwhile (warm-up
    included: the counter cannot be split at the window's edges)."""
    before = snapshots_written(scrape(server.metrics_url))
    started = time.monotonic()
    result = measure()
    return result, (snapshots_written(scrape(server.metrics_url)) - before) / (time.monotonic() - started)


def _measure(pool, servers: dict, n: int, warmup: float, duration: float, reverse: bool) -> dict:
    """One point per side; ``reverse`` runs them in the other order, so a drift in background
    load shows as a difference between the two orders rather than as a cost of the store."""
    row: dict = {}
    rates = {}
    for side in (SIDES[::-1] if reverse else SIDES):
        server = servers[side]
        row[side], rates[side] = _rate(server, lambda s=server: measure_point(pool, s.target, n, 1, warmup,
                                                                               duration, s.pid))
    return {"streams": n, "tokens_per_message": 1, "order": ", ".join(SIDES[::-1] if reverse else SIDES), **row,
            "snapshots_per_s": rates["on"], "through_snapshots_per_s": rates["through"]}


def main(args, parser, server_args: List[str], streams: List[int], warmup: float, duration: float) -> int:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).is_file():
        parser.error("--snapshots needs redis-server (Debian: apt-get install redis-server)")
    redis = RedisProcess(binary)
    servers: dict = {}
    rows = []
    try:
        servers["off"] = ServiceProcess.start(server_args)
        servers["on"] = ServiceProcess.start([*server_args, "--state-store", redis.url])
        servers["through"] = ServiceProcess.start([*server_args, "--state-store", redis.url, "--snapshot-every", "1"])
        with ClientPool(args.clients, args.streams_per_channel, args.top_k, args.parse_responses) as pool:
            for n in streams:
                for reverse in (False, True):
                    print(f"streams {n}: {', then '.join(SIDES[::-1] if reverse else SIDES)} ...", flush=True)
                    rows.append(_measure(pool, servers, n, warmup, duration, reverse))
    finally:
        for service in servers.values():
            service.stop()
        redis.stop()
    text = table(rows)
    print(text)
    write_mode(Path(args.out), "snapshots", text, {"server_args": server_args, "rows": rows}, facts())
    return 0
