"""The in-process onnxruntime ceiling: what the model alone does at batch B.

    rt = load_runtime(server_config)               # the server's own loader and options
    row = measure(rt, batch=64, tokens=8, seconds=2)
    row["tokens_per_s"]                             # B*T / time of one run

The session comes from ``service.runtime.Runtime.load`` with the same
config the server is started with (precision, device, intra-op threads,
spinning), so the ceiling and the service run the same graph with the same
options. Each run feeds the previous run's hn/cn back in, as the service
does; no softmax or top-k, only ``session.run``.
"""
from __future__ import annotations

import time

import numpy as np

from .load import TEXT


def load_runtime(config):
    """A Runtime built exactly as ``python -m service`` builds it from ``config``."""
    from model.card import load_card
    from service.runtime import Runtime

    card = load_card(config.model)
    return Runtime.load(card, precision=config.precision, device=config.device,
                        intra_op_threads=config.ort_threads, spin=config.ort_spin)


def measure(rt, batch: int, tokens: int, seconds: float, min_runs: int = 5) -> dict:
    layers, hidden = rt.state_shape
    text = np.frombuffer(TEXT, dtype=np.uint8).astype(np.int64)
    ids = np.stack([np.roll(text, -7 * b)[:tokens] for b in range(batch)])  # [B, T]
    h = np.zeros((layers, batch, hidden), np.float32)
    c = np.zeros_like(h) if rt.card.has_cell_state else None
    for _ in range(3):  # warm-up: first runs allocate
        _, h, c = rt.run(ids, h, c)
    times = []
    began = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - began < seconds:
        t0 = time.perf_counter()
        _, h, c = rt.run(ids, h, c)
        times.append(time.perf_counter() - t0)
    total = sum(times)
    per_run = np.asarray(times) * 1000.0
    return {
        "batch": batch, "tokens_per_message": tokens, "runs": len(times),
        "steps_per_s": batch * len(times) / total,  # sequences advanced per second (messages)
        "tokens_per_s": batch * tokens * len(times) / total,
        "run_ms": {"p50": float(np.percentile(per_run, 50)), "p99": float(np.percentile(per_run, 99)),
                   "mean": float(per_run.mean())},
    }
