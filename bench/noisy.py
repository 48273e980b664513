"""``python -m bench --noisy``: a victim's latency while other clients send long prefills.

The victim sends 1-token Predicts on its own session, one at a time, and
records each round trip. Neighbours, in a process of their own, loop
4096-token stateless Predicts. Measured for 0, 1 and 8 neighbours, on a
server that runs a prompt as one onnxruntime call (--prefill-chunk 0) and
on one that runs it in chunks (the default, --prefill-chunk 64: 8-token
chunks while other sessions are active, service/core/prefill.py), back to
back in one run. Prints the victim's p50/p99 per row, its p50 rise over the
same server's row without neighbours (the target: <= 5 ms) and the CPU view:
the server's process tree's cores used while the row ran (on a 2-core box,
a rise that comes with ~2 cores busy is the box being full, not the victim
queueing behind a chunk).
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path
from typing import List

from .machine import facts
from .report import write_mode
from .procs import CpuMeter, ServiceProcess

PREFILL = 4096


def _neighbours(target: str, count: int, stop, started) -> None:
    """Loop long stateless Predicts on ``count`` threads until ``stop`` is set."""
    import grpc

    from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
    from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

    request = pb.PredictRequest(input=pb.Input(tokens=[101] * PREFILL), output=pb.OutputOptions(top_k=1))

    def loop() -> None:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.LstmServiceStub(channel)
            stub.Predict(request)
            started.release()
            while not stop.is_set():
                stub.Predict(request)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _victim(target: str, seconds: float) -> List[float]:
    import grpc

    from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
    from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

    times: List[float] = []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.LstmServiceStub(channel)
        sid = stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="victim"))).session.id
        step = pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[32]), output=pb.OutputOptions(top_k=5))
        for _ in range(20):
            stub.Predict(step)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            began = time.perf_counter()
            stub.Predict(step)
            times.append(time.perf_counter() - began)
        stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid))
    return times


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(target: str, neighbours: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    stop, started = ctx.Event(), ctx.Semaphore(0)
    proc = None
    if neighbours:
        proc = ctx.Process(target=_neighbours, args=(target, neighbours, stop, started), daemon=True)
        proc.start()
        for _ in range(neighbours):  # every neighbour has had one prefill answered
            started.acquire(timeout=120)
    try:
        times = _victim(target, seconds)
    finally:
        stop.set()
        if proc is not None:
            proc.join(60)
    return {"neighbours": neighbours, "steps": len(times), "p50_ms": _percentile(times, 0.5),
            "p99_ms": _percentile(times, 0.99)}


def table(rows: List[dict]) -> str:
    lines = ["| server | neighbours looping 4096-token prefills | victim steps | victim p50 ms | victim p99 ms "
             "| p50 rise ms | server cores |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['neighbours']} | {r['steps']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                     f"| {r.get('p50_rise_ms', 0.0):+.2f} | {r.get('server_cores', 0.0):.2f} |")
    return "\n".join(lines)


def main(args, server_args: List[str], seconds: float) -> int:
    rows = []
    for name, extra in (("one call per prompt (--prefill-chunk 0)", ["--prefill-chunk", "0"]),
                        ("chunked (--prefill-chunk 64)", ["--prefill-chunk", "64"])):
        server = ServiceProcess.start([*server_args, *extra, "--max-tokens-per-message", str(PREFILL)])
        try:
            quiet = None
            for n in (0, 1, 8):
                print(f"{name}: {n} neighbours ...", flush=True)
                cpu = CpuMeter(server.pid).start()
                row = {"server": name, **measure(server.target, n, seconds)}
                row["server_cores"] = cpu.stop().cores()
                quiet = row["p50_ms"] if quiet is None else quiet
                row["p50_rise_ms"] = row["p50_ms"] - quiet
                rows.append(row)
        finally:
            server.stop()
    text = table(rows)
    print(text)
    write_mode(Path(args.out), "noisy", text, {"server_args": server_args, "rows": rows}, facts())
    return 0
