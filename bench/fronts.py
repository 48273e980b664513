"""``python -m bench --fronts-compare``: one process vs ``--fronts 1`` vs ``--fronts 2``.

Each server mode in --modes (0: one process does everything; N >= 1: a
supervisor, one engine process that owns the model, and N gRPC front
processes; -1: the server's default, one front per core but one) is started
in turn, driven at every (streams, tokens per message) point by the same
client processes, and stopped before the next one starts.

The in-process onnxruntime ceiling runs first, with no server up, at 1 and 2
intra-op threads: the engine runs --ort-threads (1 unless --server-args say
otherwise), so the 1-thread ceiling is what it could reach, and the 2-thread
one what a second core would give the model alone. Each point is read
against both at batch = streams and T = tokens per message, as the main run's
svc/ORT is.

Server CPU is the whole process tree's (bench/procs.py), in total and per
process: supervisor, engine, front-<i>, or "server" for the single process.

Prints a Markdown table, one row per mode and point, and writes
results.json and results.md to --out (bench/results/fronts).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from .ceiling import load_runtime, measure
from .load import ClientPool
from .machine import facts
from .procs import ServiceProcess
from .report import _f, _md, write_mode
from .run import measure_point, noise_note
from .targets import _find

CEILING_THREADS = (1, 2)
Points = List[Tuple[int, int]]


def mode_name(fronts: int) -> str:
    return {0: "single", -1: "fronts default"}.get(fronts, f"fronts {fronts}")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ceilings(config, points: Points, seconds: float) -> List[dict]:
    """The ORT ceiling at every point, once per thread count, with the server's own loader and options."""
    rows = []
    for threads in CEILING_THREADS:
        _log(f"ORT ceiling, {threads} intra-op thread(s) ...")
        rt = load_runtime(dataclasses.replace(config, ort_threads=threads))
        rows += [{"ort_threads": threads, **measure(rt, n, k, seconds)} for n, k in points]
        del rt  # its thread pool would otherwise compete with the servers measured next
    return rows


def measure_mode(pool: ClientPool, server_args: List[str], fronts: int, points: Points, warmup: float,
                 duration: float, notes: dict) -> List[dict]:
    # --fronts last: it overrides one in --server-args
    server = ServiceProcess.start([*server_args, "--fronts", str(fronts)])
    rows = []
    try:
        for n, k in points:
            _log(f"{mode_name(fronts)}: streams {n}, {k} token(s)/message ...")
            row = measure_point(pool, server.target, n, k, warmup, duration, server.pid, server.metrics_url)
            rows.append({"fronts": fronts, "mode": mode_name(fronts), **row})
    finally:
        if server.stop() not in (0, None):
            notes[f"server_exit_{mode_name(fronts)}"] = (f"exited with {server.proc.returncode}: "
                                                        f"{server.log_tail(10)}")
    return rows


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def add_ratios(rows: List[dict], ceiling: List[dict]) -> None:
    """Each row against the ceilings (tokens/s) and against the single process and one front (msg/s)."""
    for r in rows:
        n, k = r["streams"], r["tokens_per_message"]
        for threads in CEILING_THREADS:
            c = _find([c for c in ceiling if c["ort_threads"] == threads], n, k, "batch") or {}
            r[f"over_ceiling_{threads}t"] = _ratio(r["tokens_per_s"], c.get("tokens_per_s"))
        single = _find([x for x in rows if x["fronts"] == 0], n, k) or {}
        one = _find([x for x in rows if x["fronts"] == 1], n, k) or {}
        r["over_single"] = _ratio(r["msgs_per_s"], single.get("msgs_per_s")) if r["fronts"] != 0 else None
        r["over_fronts_1"] = _ratio(r["msgs_per_s"], one.get("msgs_per_s")) if r["fronts"] > 1 else None


def _by_process(cores: Optional[dict]) -> str:
    return ", ".join(f"{name} {c:.2f}" for name, c in (cores or {}).items()) or "-"


def table(rows: List[dict]) -> str:
    header = ["mode", "streams", "tok/msg", "conns", "msg/s", "tok/s", "p50 ms", "p99 ms", "errors", "server CPU",
              "CPU µs/msg", "CPU by process", "/ORT 1t", "/ORT 2t", "/single", "/fronts 1"]
    pct = "{:.0%}"
    return _md(header, [[
        r["mode"], str(r["streams"]), str(r["tokens_per_message"]), str(r["connections"]),
        _f(r["msgs_per_s"]), _f(r["tokens_per_s"]), _f(r["latency_ms"]["p50"], "{:.2f}"),
        _f(r["latency_ms"]["p99"], "{:.2f}"), str(r["error_count"]),
        _f(r["server_cpu"], "{:.2f}"), _f(r["server_us_per_msg"]), _by_process(r["server_cpu_by_process"]),
        _f(r["over_ceiling_1t"], pct), _f(r["over_ceiling_2t"], pct), _f(r["over_single"], pct),
        _f(r["over_fronts_1"], pct),
    ] for r in rows])


def ceiling_table(ceiling: List[dict]) -> str:
    rows = []
    for one in (c for c in ceiling if c["ort_threads"] == 1):
        two = _find([c for c in ceiling if c["ort_threads"] == 2], one["batch"], one["tokens_per_message"],
                    "batch") or {}
        rows.append([str(one["batch"]), str(one["tokens_per_message"]), _f(one["tokens_per_s"]),
                     _f(two.get("tokens_per_s")), _f(_ratio(two.get("tokens_per_s"), one["tokens_per_s"]), "{:.2f}x")])
    return _md(["batch B", "tokens T", "1 thread tok/s", "2 threads tok/s", "2t / 1t"], rows)


def summary(results: dict) -> str:
    st = results["settings"]
    head = (f"model {st['model']} ({st['precision']}), device {st['device']}, engine --ort-threads "
            f"{st['engine_ort_threads']}; {st['duration']} s per point after {st['warmup']} s warm-up; "
            "server CPU in cores over the process tree; /ORT = tokens/s over the in-process ceiling at "
            "batch = streams, T = tok/msg; /single and /fronts 1 = msg/s over that mode's at the same point; "
            "conns = the clients' HTTP/2 connections (--streams-per-channel each): the kernel spreads "
            "connections, not streams, over the fronts, so with fewer connections than fronts some sit idle")
    notes = [f"- {k}: {v}" for k, v in results["notes"].items()]
    return "\n".join([head, "", table(results["service"]), "", "In-process onnxruntime ceiling:", "",
                      ceiling_table(results["ceiling"]), *(["", "Notes:", *notes] if notes else [])])


def main(args, config, server_args: List[str], points: Points, warmup: float, duration: float,
         ceiling_seconds: float) -> int:
    """``config``: the service Config of ``server_args`` (the ceiling loads the model with it)."""
    machine = facts()  # before the load: its loadavg is the background the figures ran on
    modes = args.modes  # --fronts values, parsed by bench/__main__.py
    results = {
        "settings": {"model": config.model, "precision": config.precision, "device": config.device,
                     "engine_ort_threads": config.ort_threads, "server_args": " ".join(server_args),
                     "modes": modes, "points": [list(p) for p in points], "warmup": warmup, "duration": duration,
                     "ceiling_seconds": ceiling_seconds, "ceiling_threads": list(CEILING_THREADS),
                     "client_processes": args.clients, "streams_per_channel": args.streams_per_channel},
        "server_config": config.summary(), "notes": {}, "ceiling": ceilings(config, points, ceiling_seconds),
        "service": [],
    }
    with ClientPool(args.clients, args.streams_per_channel, args.top_k, args.parse_responses) as pool:
        for fronts in modes:
            results["service"] += measure_mode(pool, server_args, fronts, points, warmup, duration, results["notes"])
    add_ratios(results["service"], results["ceiling"])
    if noise := noise_note(results["service"]):
        results["notes"]["noise"] = noise
    text = summary(results)
    print(text, flush=True)
    write_mode(Path(args.out), "results", text, results, machine)
    return 0
