"""Helpers for the lease and handoff tests (tests/service/persist/test_leases.py,
test_handoff.py): replicas as real ``python -m lstm_service`` processes on one real
redis-server, each with its own --replica-id, in the server mode the suite runs in
(``make test-fronts`` sets LSTM_FRONTS=0: one process; else the default front + engine).
Redis is read over a raw socket (tests/redis_helpers.py), independently of the service."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Dict, Optional, Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2

from durable_helpers import Service
from redis_helpers import RedisServer


def mode_args() -> list:
    return ["--fronts", os.environ["LSTM_FRONTS"]] if "LSTM_FRONTS" in os.environ else []


def replica(model_dir: Path, workdir: Path, redis: RedisServer, name: str, every: int = 64,
            extra: Sequence[str] = ()) -> Service:
    return Service(model_dir, workdir, name, ["--state-store", redis.url, "--replica-id", name,
                                              "--snapshot-every", str(every), "--snapshot-idle-seconds", "600",
                                              *mode_args(), *extra])


def lease_of(redis: RedisServer, session_id: str, owner: str = "anonymous") -> Dict[str, str]:
    """The session's lease hash {owner, epoch, seq}, {} if there is none."""
    reply = redis.command("HGETALL", f"lstm:lease:{owner}/{session_id}").decode()
    parts = [p for p in reply.split("\r\n") if p and not p.startswith(("*", "$"))]
    return dict(zip(parts[0::2], parts[1::2]))


def heartbeat_ttl_ms(redis: RedisServer, replica_id: str) -> int:
    """PTTL of the replica's heartbeat key: -2 when it is gone."""
    return int(redis.command("PTTL", f"lstm:replica:{replica_id}").decode().strip().lstrip(":"))


def pause_tree(service: Service, sig: signal.Signals) -> None:
    """SIGSTOP/SIGCONT the service and its children (the engine and fronts of --fronts)."""
    assert service.proc is not None
    pids = [service.proc.pid]
    try:
        children = Path(f"/proc/{service.proc.pid}/task/{service.proc.pid}/children").read_text().split()
        pids += [int(p) for p in children]
    except OSError:
        pass
    for pid in pids:
        os.kill(pid, sig)


def reason_of(exc: grpc.RpcError) -> Optional[str]:
    blob = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    if blob is None:
        return None
    info = error_details_pb2.ErrorInfo()
    for detail in status_pb2.Status.FromString(blob).details:
        if detail.Unpack(info):
            return info.reason
    return None
