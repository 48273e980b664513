"""Training speed of one recipe in fp32 and in bf16 autocast, side by side.

    python -m lstm_service.model.step_speed --data text.txt --layers 2 --hidden 512 \\
        --locked-dropout --dropout 0.25 --weight-drop 0.15 --threads 2 [--steps 10]

Takes the training flags of ``python -m lstm_service.model.train`` (``--out``
is not needed: nothing is saved), builds the run as training does and times
``--steps`` of its own training step (forward, backward, clip, AdamW, EMA) on
random bytes, after two warm-up steps, once without and once with ``--bf16``.
Prints the median step and tokens per second of each, and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from .train import Run, _step, parse_args

WARMUP_STEPS = 2


def time_steps(args: argparse.Namespace, steps: int) -> float:
    """Median seconds of one training step for ``args`` (its --bf16 decides the precision)."""
    run = Run(args)
    run.forward.train()
    rng = np.random.default_rng(args.seed)
    rows = rng.integers(0, 256, (args.batch_size, args.seq_len + 1)).astype(np.int64)
    h, c = run.model.initial_state(args.batch_size)
    times = []
    for i in range(WARMUP_STEPS + steps):
        start = time.perf_counter()
        _, h, c = _step(run, rows[:, :-1], rows[:, 1:], h, c, lr=args.lr)
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--steps", type=int, default=10)
    opts, train_flags = own.parse_known_args(argv)
    steps = opts.steps
    if steps < 1:
        print("error: --steps must be >= 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        # --out is required by training but nothing is saved here; --bf16 is set per row below.
        base = parse_args(["--out", scratch, *train_flags])
        if base.threads:
            torch.set_num_threads(base.threads)
        tokens = base.batch_size * base.seq_len
        print(f"{base.cell} {base.layers}x{base.hidden}, {base.batch_size}x{base.seq_len} per step, "
              f"{torch.get_num_threads()} threads, median of {steps} steps")
        seconds = {}
        for name, bf16 in (("fp32", False), ("bf16", True)):
            seconds[name] = time_steps(argparse.Namespace(**{**vars(base), "bf16": bf16}), steps)
            print(f"{name}: {seconds[name] * 1000:,.0f} ms per step, {tokens / seconds[name]:,.0f} tokens/s")
    print(f"bf16 / fp32 tokens/s: {seconds['fp32'] / seconds['bf16']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
