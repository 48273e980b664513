"""``python -m bench``: benchmark the service against its echo floor and ORT ceiling.

    python -m bench --model models/shakespeare --precision fp32,int8   # full sweep, ~4 min each
    python -m bench --quick --model DIR --out /tmp/bench              # smoke run, ~15 s
    python -m bench --kserve --model models/shakespeare                # perf_analyzer (KServe v2) beside lstm.v1
    python -m bench --proxy --model models/shakespeare                 # direct vs through HAProxy, 1 and 64 streams
    python -m bench --snapshots --model models/shakespeare             # Redis snapshots off vs on vs write-through
    python -m bench --handoff --model models/shakespeare               # calls alternating two replicas; takeover
    python -m bench --journal --model models/shakespeare               # journal off vs on: memory, 64 streams
    python -m bench --noisy --model models/shakespeare                 # victim latency beside 4096-token prefills
    python -m bench --fronts-compare --model models/shakespeare        # --fronts 0 vs 1 vs 2, ORT 1/2-thread ceilings

Starts ``python -m lstm_service`` (or uses --target), a bare gRPC echo server
and client processes; prints a Markdown table, the ratios and the targets,
and writes results.json, results.md and throughput.png to --out.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .report import compare_table, summary, write

QUICK = {"streams": "1,4", "tokens_per_message": "1,8", "duration": 1.0, "warmup": 0.3, "ceiling_seconds": 0.3}
FULL = {"streams": "1,16,64,256", "tokens_per_message": "1,8", "duration": 10.0, "warmup": 2.0, "ceiling_seconds": 3.0}


def _ints(text: str, least: int = 1) -> List[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < least:
        raise argparse.ArgumentTypeError(f"expected integers >= {least}, got {text!r}")
    return values


def _server_args(args, precision: str) -> List[str]:
    return ["--model", args.model, "--precision", precision, "--device", args.device, *shlex.split(args.server_args)]


def _config(parser, server_args: List[str]):
    """The service's own parse of ``server_args``: the ceiling runs what the server runs."""
    from lstm_service.service.proc.config import load_config
    from lstm_service.service.api.errors import ConfigError

    try:
        return load_config(server_args)
    except (ConfigError, SystemExit) as exc:
        parser.error(f"--server-args: {exc}")


def default_clients() -> int:
    # One client process needs ~30-40 us of CPU per message here, so on 2 cores it is
    # never the limit and a second one only adds contention; bigger machines get more.
    return min(4, max(1, (os.cpu_count() or 1) // 4))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/shakespeare",
                   help="model directory, for the server and the ORT ceiling [models/shakespeare]")
    p.add_argument("--precision", default="fp32",
                   help="fp32 | int8 | fp32,int8 (one full run each, into --out/<precision>) [fp32]")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="server and ceiling device [auto: CUDA if usable]")
    p.add_argument("--target", help="host:port of a running service to drive instead of starting one")
    p.add_argument("--metrics-url", help="with --target: its Prometheus URL, for the batch histogram")
    p.add_argument("--streams", help=f"concurrent streams to sweep [{FULL['streams']}; --quick {QUICK['streams']}]")
    p.add_argument("--tokens-per-message", help=f"tokens per Stream message to sweep [{FULL['tokens_per_message']}]")
    p.add_argument("--duration", type=float, help=f"measured seconds per point [{FULL['duration']}]")
    p.add_argument("--warmup", type=float, help=f"warm-up seconds per point [{FULL['warmup']}]")
    p.add_argument("--ceiling-seconds", type=float, help=f"seconds per ORT ceiling point [{FULL['ceiling_seconds']}]")
    p.add_argument("--clients", type=int, default=default_clients(),
                   help="client processes, each with a share of the streams [cores/4, 1 to 4: %(default)s here]")
    p.add_argument("--streams-per-channel", type=int, default=64, help="streams sharing one HTTP/2 connection [64]")
    p.add_argument("--parse-responses", action="store_true",
                   help="client parses every answer (a realistic client) instead of keeping bytes")
    p.add_argument("--top-k", type=int, help="top_k asked for on open [the server's default, 5]")
    p.add_argument("--server-args", default="", help="extra flags for python -m lstm_service, e.g. '--max-batch 128'")
    p.add_argument("--out", help="directory for results.json, results.md, throughput.png "
                                 "[bench/results; --fronts-compare: bench/results/fronts]")
    p.add_argument("--quick", action="store_true", help="smoke run for tests/CI: streams 1,4, 1 s per point")
    p.add_argument("--kserve", action="store_true",
                   help="perf_analyzer on the KServe v2 endpoint beside lstm.v1, streams 1,16,64 (bench/kserve.py)")
    p.add_argument("--proxy", action="store_true",
                   help="direct vs through HAProxy on deploy/haproxy.cfg, same run, streams 1,64 (bench/proxy.py)")
    p.add_argument("--snapshots", action="store_true",
                   help="--state-store off vs on (a redis-server of its own, default policy) vs write-through "
                        "(--snapshot-every 1), streams 64 (bench/snapshots.py)")
    p.add_argument("--handoff", action="store_true",
                   help="two replicas on one Redis: p50/p99 of calls whose session alternates replicas (a handoff "
                        "each) beside calls on one replica, and the takeover time after kill -9 (bench/handoff.py)")
    p.add_argument("--rounds", type=int, default=100, help="--handoff: sessions of 10 alternating calls each [100]")
    p.add_argument("--journal", action="store_true",
                   help="each session's journal off (--journal-calls 0) vs on: memory per idle session, and steps/s "
                        "and server CPU per step at 64 streams, both orders (bench/journal.py)")
    p.add_argument("--noisy", action="store_true",
                   help="a 1-token victim's p50/p99 beside 0/1/8 clients looping 4096-token prefills, one-call vs "
                        "chunked prefill (bench/noisy.py)")
    p.add_argument("--fronts-compare", action="store_true",
                   help="single process vs --fronts 1 vs --fronts 2 (see --modes), every point, with the 1- and "
                        "2-thread ORT ceilings and server CPU per process (bench/fronts.py)")
    p.add_argument("--modes", default="0,1,2", type=lambda text: _ints(text, least=-1),
                   help="--fronts-compare: the server's --fronts values, one server each, in turn [0,1,2]")
    p.add_argument("--sequence-length", type=int, default=64, help="--kserve: steps per perf_analyzer sequence [64]")
    p.add_argument("--perf-analyzer", help="--kserve: the perf_analyzer binary [.venv/perf-analyzer/bin/perf_analyzer]")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = "bench/results/fronts" if args.fronts_compare else "bench/results"
    preset = QUICK if args.quick else FULL
    streams = _ints(args.streams or preset["streams"])
    tokens = _ints(args.tokens_per_message or preset["tokens_per_message"])
    duration = args.duration or preset["duration"]
    warmup = preset["warmup"] if args.warmup is None else args.warmup
    ceiling_seconds = args.ceiling_seconds or min(preset["ceiling_seconds"], duration)
    if not (Path(args.model) / "model.json").is_file():
        parser.error(f"--model {args.model}: no model.json there (the ORT ceiling needs the model even with --target)")

    precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    if args.target and len(precisions) > 1:
        parser.error("--target serves one precision; give one --precision")
    if args.target and args.fronts_compare:
        parser.error("--fronts-compare starts each server mode itself; it cannot drive --target")
    from .run import run

    server_args = _server_args(args, precisions[0])  # the single-precision modes' server
    if args.kserve:
        from .kserve import main as kserve_main

        return kserve_main(args, parser, precisions)
    if args.proxy:
        from .proxy import main as proxy_main

        return proxy_main(args, parser, server_args, _ints(args.streams or "1,64"), warmup, duration)
    if args.noisy:
        from .noisy import main as noisy_main

        return noisy_main(args, server_args, duration if args.duration or args.quick else 8.0)
    if args.journal:
        from .journal import main as journal_main

        return journal_main(args, server_args, _ints(args.streams or "64"), warmup, duration)
    if args.handoff:
        from .handoff import main as handoff_main

        return handoff_main(args, parser, server_args, args.rounds)
    if args.snapshots:
        from .snapshots import main as snapshots_main

        return snapshots_main(args, parser, server_args, _ints(args.streams or "64"), warmup, duration)
    points = [(n, k) for n in streams for k in tokens]
    if args.fronts_compare:
        from .fronts import main as fronts_main

        return fronts_main(args, _config(parser, server_args), server_args, points, warmup, duration, ceiling_seconds)
    runs = []
    for precision in precisions:
        server_args = _server_args(args, precision)
        results = run(_config(parser, server_args), server_args, points, warmup=warmup,
                      duration=duration, ceiling_seconds=ceiling_seconds, clients=args.clients,
                      target=args.target, metrics_url=args.metrics_url,
                      streams_per_channel=args.streams_per_channel, top_k=args.top_k,
                      parse=args.parse_responses, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(summary(results) + "\n", flush=True)
        out = Path(args.out) / precision if len(precisions) > 1 else Path(args.out)
        for message in write(results, out):
            print(message, file=sys.stderr)
        runs.append(results)
    if len(runs) > 1:
        table = compare_table(runs)
        print(table)
        (Path(args.out) / "summary.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
