"""``python -m bench --handoff``: what it costs when a session's calls reach another replica.

Two replicas (service processes with ``--state-store`` and their own ``--replica-id``) on
one redis-server of its own (Debian package, persistence off). Each round creates a session
on replica A, then sends it Predict calls (1 token, full top-k off) alternating B, A, B, ...:
every one of those finds the session on the other replica, which asks the owner to hand it
over (service/persist/handoff.py). Interleaved with them, the same number of plain calls go
to a session that stays on one replica, so background load hits both alike. Prints p50/p99
of both kinds.

Then the takeover after a crash: a third replica (``--fronts 0``, write-through) holds a
session; it is killed with SIGKILL and the time until replica A answers a call for that
session is measured (the owner's heartbeat must run out first: ``--lease-ms``).
"""
from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Dict, List

import grpc
import numpy as np

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

from .machine import facts
from .procs import ServiceProcess
from .report import write_mode
from .snapshots import RedisProcess

OUT = pb.OutputOptions(top_k=1)


def _ms(values: List[float]) -> Dict[str, float]:
    return {"p50": float(np.percentile(values, 50)) * 1000, "p99": float(np.percentile(values, 99)) * 1000,
            "calls": len(values)}


def _timed(stub, session_id: str, token: int) -> float:
    began = time.perf_counter()
    stub.Predict(pb.PredictRequest(session_id=session_id, input=pb.Input(tokens=[token]), output=OUT), timeout=30)
    return time.perf_counter() - began


def table(result: dict) -> str:
    lines = ["| calls | count | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: |"]
    for kind in ("plain", "handoff"):
        r = result[kind]
        lines.append(f"| {kind} (session {'stays on one replica' if kind == 'plain' else 'alternates replicas'}) "
                     f"| {r['calls']} | {r['p50']:.2f} | {r['p99']:.2f} |")
    lines.append(f"\ntakeover after kill -9 of the owner (--lease-ms {result['lease_ms']}): "
                 f"{result['takeover_ms']:.0f} ms")
    return "\n".join(lines)


def _takeover(server_args: List[str], redis_url: str, a_stub, lease_ms: int) -> float:
    victim = ServiceProcess.start([*server_args, "--state-store", redis_url, "--replica-id", "bench-victim",
                                   "--snapshot-every", "1", "--fronts", "0"])
    channel = grpc.insecure_channel(victim.target)
    try:
        stub = pb_grpc.LstmServiceStub(channel)
        sid = "takeover-" + uuid.uuid4().hex[:12]
        stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(tokens=[65, 66])), timeout=30)
        _timed(stub, sid, 67)
        victim.kill()
        began = time.perf_counter()
        while True:
            try:
                _timed(a_stub, sid, 68)
                return time.perf_counter() - began
            except grpc.RpcError as exc:  # UNAVAILABLE LEASE_HELD while the heartbeat runs out: retry
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.perf_counter() - began > 10:
                    raise
    finally:
        channel.close()
        victim.stop()


def main(args, parser, server_args: List[str], rounds: int) -> int:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).is_file():
        parser.error("--handoff needs redis-server (Debian: apt-get install redis-server)")
    lease_ms = 400
    for i, arg in enumerate(server_args[:-1]):
        if arg == "--lease-ms":
            lease_ms = int(server_args[i + 1])
    redis = RedisProcess(binary)
    replicas: List[ServiceProcess] = []
    channels: List[grpc.Channel] = []
    plain: List[float] = []
    moved: List[float] = []
    try:
        for name in ("bench-a", "bench-b"):
            replicas.append(ServiceProcess.start([*server_args, "--state-store", redis.url, "--replica-id", name]))
        channels = [grpc.insecure_channel(r.target) for r in replicas]
        stubs = [pb_grpc.LstmServiceStub(c) for c in channels]
        stay = "plain-" + uuid.uuid4().hex[:12]
        stubs[0].CreateSession(pb.CreateSessionRequest(session_id=stay, prompt=pb.Input(tokens=[65])), timeout=30)
        calls = 10
        for r in range(rounds):
            sid = f"handoff-{r:04d}-" + uuid.uuid4().hex[:8]
            stubs[0].CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(tokens=[65])), timeout=30)
            for i in range(1, calls + 1):
                moved.append(_timed(stubs[i % 2], sid, 66 + i % 20))
                plain.append(_timed(stubs[0], stay, 66 + i % 20))
            stubs[0].DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=30)
        takeover = _takeover(server_args, redis.url, stubs[0], lease_ms)
    finally:
        for channel in channels:
            channel.close()
        for service in replicas:
            service.stop()
        redis.stop()
    result = {"plain": _ms(plain), "handoff": _ms(moved), "takeover_ms": takeover * 1000, "lease_ms": lease_ms,
              "rounds": rounds}
    text = table(result)
    print(text)
    write_mode(Path(args.out), "handoff", text, {"server_args": server_args, **result}, facts())
    return 0
