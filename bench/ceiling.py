"""The in-process onnxruntime ceiling: what the model alone does at batch B.

    rt = load_runtime(server_config)               # the server's own loader and options
    row = measure(rt, batch=64, tokens=8, seconds=2)
    row["tokens_per_s"]                             # B*T / time of one run

The session comes from ``service.runtime.Runtime.load`` with the same
config the server is started with (precision, device, intra-op threads,
spinning), so the ceiling and the service run the same graph with the same
options. Each run feeds the previous run's hn/cn back in, as the service
does; no softmax or top-k, only ``session.run``. On the CUDA provider the
state stays on the GPU between runs (IOBinding, hn/cn become the next
h0/c0) and only the logits come back to the host, which is what a service
needs to answer; on CPU a plain ``run`` with numpy arrays.
"""
from __future__ import annotations

import time

import numpy as np

from .load import TEXT


def load_runtime(config):
    """A Runtime built exactly as ``python -m lstm_service`` builds it from ``config``."""
    from lstm_service.model.card import load_card
    from lstm_service.service.core.runtime import Runtime

    return Runtime.from_config(load_card(config.model), config)


def _plain(rt, ids: np.ndarray, state: tuple):
    current = [state]

    def step() -> None:
        _, current[0] = rt.run(ids, current[0])

    return step


def _bound(rt, ids: np.ndarray, state0: tuple, device: str):
    """One run with tokens and state on ``device``; hn/cn swap into h0/c0 for the next run."""
    import onnxruntime as ort

    session = rt.session
    names = [f"{p}0" for p in rt.card.state_names]  # h0 (, c0)
    on = lambda a: ort.OrtValue.ortvalue_from_numpy(a, device, 0)  # noqa: E731
    state = [on(part) for part in state0]
    spare = [on(np.zeros_like(part)) for part in state0]
    binding = session.io_binding()
    binding.bind_ortvalue_input("tokens", on(ids))

    def step() -> None:
        for name, value, out in zip(names, state, spare):
            binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output(name.replace("0", "n"), out)
        binding.bind_output("logits", "cpu")
        session.run_with_iobinding(binding)
        state[:], spare[:] = spare[:], state[:]

    return step


def _one_row(rt, ids: np.ndarray, state: tuple):
    """The serving session's own one-row call, as is (no two copies, one thread)."""
    current = [state]

    def step() -> None:
        _, current[0] = rt._feed(ids, current[0])

    return step


# A lone stream's steps come one network round trip apart; the ORT thread sleeps in between.
# A step after such a gap finds the model's weights (14 MB for the shipped 2x512 model, one
# read per step at B=1) gone from the caches: measured on the 2-core box, the B=1 step took
# 0.36 ms back to back, 0.71 ms after a 0.5 ms sleep and 0.94 ms after 1 ms. The budget's
# in-server "onnxruntime run" at 1 stream (~0.5 ms) is this, so the ceiling reports it too.
LONE_GAP_S = 0.0005


def _times(step, seconds: float, min_runs: int, gap: float = 0.0) -> list:
    """Wall seconds of each run of ``step``; ``gap``: sleep that long before each (not timed)."""
    for _ in range(3):  # warm-up: first runs allocate
        step()
    times = []
    began = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - began < seconds:
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _ms(times: list) -> dict:
    per_run = np.asarray(times) * 1000.0
    return {"p50": float(np.percentile(per_run, 50)), "p99": float(np.percentile(per_run, 99)),
            "mean": float(per_run.mean())}


def measure(rt, batch: int, tokens: int, seconds: float, min_runs: int = 5, bind: str = "") -> dict:
    """``bind``: "" (IOBinding on "cuda" when the session runs on CUDA, else plain run), or a device name.

    ``run_ms`` is the call the server makes (``rt.run``) back to back: at B=1 two copies
    of the row where one row alone is not exact (``lone_copies`` 2; service/core/runtime.py).
    Beside it at B=1: ``row_ms``, the session's own one-row call as is, and ``gap_ms``, the
    served call after a LONE_GAP_S sleep each time, which is what a lone stream's step costs."""
    layers, hidden = rt.state_shape
    text = np.frombuffer(TEXT, dtype=np.uint8).astype(np.int64)
    ids = np.stack([np.roll(text, -7 * b)[:tokens] for b in range(batch)])  # [B, T]
    state = tuple(np.zeros((layers, batch, hidden), np.float32) for _ in rt.card.state_names)
    bind = bind or ("cuda" if "CUDAExecutionProvider" in rt.providers else "")
    step = _bound(rt, ids, state, bind) if bind else _plain(rt, ids, state)
    times = _times(step, seconds, min_runs)
    total = sum(times)
    row = {
        "batch": batch, "tokens_per_message": tokens, "runs": len(times), "iobinding": bind or None,
        "steps_per_s": batch * len(times) / total,  # sequences advanced per second (messages)
        "tokens_per_s": batch * tokens * len(times) / total,
        "run_ms": _ms(times),
    }
    if batch == 1 and not bind:
        row["row_ms"] = _ms(_times(_one_row(rt, ids, state), seconds / 2, min_runs))
        row["gap_ms"] = _ms(_times(step, seconds / 2, min_runs, LONE_GAP_S))
        row["lone_copies"] = 1 if rt.lone_exact else 2
    return row


def thread_rows(model: str, precision: str = "fp32", seconds: float = 0.3,
                batches=(1, 2, 4, 8, 16, 32, 64), widths=(1, 8)) -> list:
    """ORT step time (wall p50) and CPU time per run at 1 and 2 intra-op threads, per batch
    size and width, each pair checked bitwise equal, and which session the runtime picks.

    CPU time is this process's (time.process_time), so run it on an otherwise idle box
    for the wall figures; the CPU figures and the ratios hold up better on a busy one."""
    from lstm_service.model.card import load_card
    from lstm_service.service.core.runtime import Runtime

    card = load_card(model)
    one = Runtime.load(card, precision, "cpu", intra_op_threads=1, wide_threads=0)
    two = Runtime.load(card, precision, "cpu", intra_op_threads=2, wide_threads=0)
    served = Runtime.load(card, precision, "cpu")
    layers, hidden = one.state_shape
    text = np.frombuffer(TEXT, dtype=np.uint8).astype(np.int64)
    rows = []
    for t in widths:
        for b in batches:
            ids = np.stack([np.roll(text, -7 * i)[:t] for i in range(b)])
            state = tuple(np.full((layers, b, hidden), 0.1, np.float32) for _ in card.state_names)
            row = {"batch": b, "tokens": t, "wide": served.wide_for(b, t)}
            outs = []
            for name, rt in (("1", one), ("2", two)):
                for _ in range(3):
                    out = rt.run(ids, state)
                times, cpu0, began = [], time.process_time(), time.perf_counter()
                while len(times) < 5 or time.perf_counter() - began < seconds:
                    t0 = time.perf_counter()
                    rt.run(ids, state)
                    times.append(time.perf_counter() - t0)
                row[f"wall_ms_{name}"] = 1000 * float(np.median(times))
                row[f"cpu_ms_{name}"] = 1000 * (time.process_time() - cpu0) / len(times)
                outs.append(out)
            row["same_bits"] = bool(np.array_equal(outs[0][0], outs[1][0])
                                    and all(np.array_equal(x, y) for x, y in zip(outs[0][1], outs[1][1])))
            rows.append(row)
    return rows


def thread_table(rows: list) -> str:
    lines = ["| T | B | 1 thread: step ms | CPU ms | 2 threads: step ms | CPU ms | step x | CPU x | same bits "
             "| served on |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['tokens']} | {r['batch']} | {r['wall_ms_1']:.3f} | {r['cpu_ms_1']:.3f} | "
                     f"{r['wall_ms_2']:.3f} | {r['cpu_ms_2']:.3f} | {r['wall_ms_2'] / r['wall_ms_1']:.2f} | "
                     f"{r['cpu_ms_2'] / r['cpu_ms_1']:.2f} | {'yes' if r['same_bits'] else 'NO'} | "
                     f"{'2 threads' if r['wide'] else '1 thread'} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench.ceiling --threads [--model DIR] [--precision P] [--seconds S]
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.ceiling",
                                     description="ORT step and CPU time at 1 vs 2 intra-op threads per batch size")
    parser.add_argument("--threads", action="store_true", required=True)
    parser.add_argument("--model", default="models/shakespeare")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--batches", default="1,2,4,8,16,32,64", help="batch sizes B [1,2,4,8,16,32,64]")
    parser.add_argument("--widths", default="1,8", help="tokens per row T [1,8]")
    cli = parser.parse_args()
    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    print(thread_table(thread_rows(cli.model, cli.precision, cli.seconds, ints(cli.batches), ints(cli.widths))))
