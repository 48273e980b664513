"""Single-stream step latency: over gRPC vs one in-process onnxruntime step.

    python -m tools.latency_probe --model models/shakespeare [--steps 2000]

Starts ``python -m lstm_service`` as a child process on a free port, opens one
``Stream`` session and sends single-token steps in a closed loop (write,
wait for the answer, next), then times the same single-token step done
with onnxruntime in this process (state carried, B=1, T=1). Prints p50,
p90, p99 for both and the difference; ``--json`` writes them to a file.
The full load benchmark (many streams, batching) is the bench package.
"""
from __future__ import annotations

import argparse
import sys
import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from lstm_service.service.proc.main import event_loop_runner
from tools.server_process import ServerProcess

TEXT = b"First Citizen: Before we proceed any further, hear me speak. "


def percentiles(samples: List[float]) -> Dict[str, float]:
    ms = np.array(samples) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "n": len(samples)}


def ort_steps(model: str, precision: str, steps: int, warmup: int, threads: int) -> List[float]:
    from lstm_service.model.card import load_card

    from lstm_service.service.core.runtime import Runtime

    rt = Runtime.load(load_card(model), precision, "cpu", intra_op_threads=threads)
    layers, hidden = rt.state_shape
    state = tuple(np.zeros((layers, 1, hidden), np.float32) for _ in rt.card.state_names)
    times = []
    for i in range(warmup + steps):
        token = np.array([[TEXT[i % len(TEXT)]]], np.int64)
        began = time.perf_counter()
        _, state = rt.run(token, state)
        if i >= warmup:
            times.append(time.perf_counter() - began)
    return times


async def grpc_steps(target: str, steps: int, warmup: int) -> List[float]:
    import grpc

    from lstm_client.requests import open_request, session_metadata, step_request  # clients/python
    from lstm_client.session_ids import new_session_id
    from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

    sid = new_session_id()
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.LstmServiceStub(channel).Stream(metadata=session_metadata(sid))
        await call.write(open_request(sid, True, 0, True, None))
        await call.read()
        requests = [step_request(tokens=[b]) for b in TEXT]
        times = []
        for i in range(warmup + steps):
            began = time.perf_counter()
            await call.write(requests[i % len(requests)])
            await call.read()
            if i >= warmup:
                times.append(time.perf_counter() - began)
        await call.done_writing()
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/shakespeare")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ort-threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    server = ServerProcess(["--model", args.model, "--precision", args.precision, "--device", "cpu",
                            "--ort-threads", str(args.ort_threads), "--log-level", "WARNING"])
    target = server.target
    try:
        runner, _ = event_loop_runner()
        with runner:
            over_grpc = percentiles(runner.run(grpc_steps(target, args.steps, args.warmup)))
    finally:
        server.stop()
    in_process = percentiles(ort_steps(args.model, args.precision, args.steps, args.warmup, args.ort_threads))
    result = {"model": args.model, "precision": args.precision, "grpc_stream": over_grpc, "ort_in_process": in_process,
              "p50_overhead_ms": over_grpc["p50_ms"] - in_process["p50_ms"]}
    print(f"single-stream step latency, {args.model} ({args.precision}), {args.steps} steps")
    print(f"{'':22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for name, r in (("gRPC Stream step", over_grpc), ("in-process ORT step", in_process)):
        print(f"{name:22}{r['p50_ms']:9.3f}{r['p90_ms']:9.3f}{r['p99_ms']:9.3f}")
    print(f"p50 overhead of the service: {result['p50_overhead_ms']:.3f} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
