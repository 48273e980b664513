"""``python -m tests.fuzz.run --cases 50000``: the long fuzz run (``make fuzz``).

Starts servers on a freshly exported tiny random-weight model (or --model;
or fuzzes an already running --target), runs the cases (fuzzed requests) with
a fixed seed in --jobs worker processes, each with its own server, prints
progress and then the counts: cases, sequences, calls, statuses seen per
method, crashes, unexpected statuses, mismatches. Exit 0 when there were no
crashes, unexpected statuses or mismatches, 1 otherwise, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List, Optional, Tuple

from .calls import Stats
from .driver import fuzz
from .server import ServerProcess


def tiny_model(directory: Path, cell: str = "lstm") -> Path:
    """The test suite's tiny model (random weights), exported with the suite's exporter."""
    from lstm_service.export.bundle import write_model_dir
    from tests.conftest import build_tiny_model

    write_model_dir(build_tiny_model(cell), directory / "model", name=f"tiny-{cell}", quantize=None)
    return directory / "model"


class Progress:
    def __init__(self, total: int, worker: int) -> None:
        self.total, self.worker, self.began = total, worker, time.monotonic()
        self.every, self.next = max(1, total // 25), max(1, total // 25)

    def __call__(self, stats: Stats) -> None:
        if stats.cases < self.next:
            return
        self.next += self.every
        elapsed = time.monotonic() - self.began
        rate = stats.cases / elapsed if elapsed else 0.0
        eta = max(0.0, self.total - stats.cases) / rate if rate else 0.0
        print(f"[worker {self.worker}] {min(stats.cases, self.total):>7d}/{self.total} cases  {rate:6.1f}/s  "
              f"eta {eta:5.0f}s  crashes {len(stats.crashes)}  unexpected {len(stats.unexpected)}  "
              f"mismatches {len(stats.mismatches)}", file=sys.stderr, flush=True)


def worker(job: Tuple[int, int, int, Optional[str], Optional[Path], Optional[int]]) -> Tuple[Stats, List[str]]:
    """One share of the run on its own server: (stats, the server's ERROR lines)."""
    index, cases, seed, target, model, fronts = job
    if target:
        return fuzz(target, cases, seed, progress=Progress(cases, index)), []
    with ServerProcess(model, () if fronts is None else ("--fronts", str(fronts))) as server:
        stats = fuzz(server.target, cases, seed, alive=server.alive, progress=Progress(cases, index))
        stats.crashes += [f"server traceback: {line}" for line in server.tracebacks()]
        return stats, server.error_lines()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50000, help="fuzzed requests to run, in all")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed of worker 0 (worker i: seed + i)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, each with its own server")
    parser.add_argument("--model", type=Path, help="model directory (default: export the tiny test model)")
    parser.add_argument("--cell", default="lstm", help="cell of the tiny model: lstm, peephole, coupled, gru, rnn")
    parser.add_argument("--target", help="fuzz a server already running at HOST:PORT instead of starting one")
    parser.add_argument("--fronts", type=int, help="the server's --fronts (0: one process; default: the server's "
                                                   "default mode, fronts + engine)")
    args = parser.parse_args(argv)
    if args.cases < 1 or args.jobs < 1:
        parser.error("--cases and --jobs must be >= 1")
    if args.model is not None and not (args.model / "model.json").is_file():
        parser.error(f"--model {args.model}: no model.json there")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lstm-fuzz-") as tmp:
        model = args.model or (None if args.target else tiny_model(Path(tmp), args.cell))
        shares = [args.cases // args.jobs + (i < args.cases % args.jobs) for i in range(args.jobs)]
        jobs = [(i, share, args.seed + i, args.target, model, args.fronts) for i, share in enumerate(shares)]
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(worker, jobs))
    total, server_errors = Stats(), []
    for stats, errors in results:
        total.merge(stats)
        server_errors += errors
    print(total.report(server_errors), flush=True)
    mode = "target" if args.target else ("default (fronts + engine)" if args.fronts is None else f"--fronts {args.fronts}")
    print(f"seed {args.seed}, {args.jobs} jobs, server mode {mode}, {time.monotonic() - began:.0f} s", flush=True)
    return 1 if total.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
