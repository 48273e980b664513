"""``python -m lstm_service.service.proc.healthcheck``: a gRPC health probe for containers.

Asks grpc.health.v1.Health/Check and exits 0 only when the answer is
SERVING; 1 otherwise (not serving, no answer, timeout, bad target). Docker
treats exit 1 as unhealthy (2 is reserved there, so it is never used).

The default target is 127.0.0.1 on the port the service itself reads from
LSTM_PORT (50051 unset), so the Dockerfile's HEALTHCHECK needs no arguments
and follows a changed port. Imports only grpcio and grpcio-health-checking:
it starts in a fraction of a second and never loads the model.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping, Optional, Sequence, Tuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 50051


def default_target(environ: Optional[Mapping[str, str]] = None) -> str:
    environ = os.environ if environ is None else environ
    return f"127.0.0.1:{environ.get('LSTM_PORT') or DEFAULT_PORT}"


def check(target: str, service: str = "", timeout: float = 3.0) -> Tuple[bool, str]:
    """(serving, what was seen) for one Health/Check call."""
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        return False, f"{exc.code().name}: {exc.details()}"
    except ValueError as exc:  # e.g. a malformed target
        return False, f"bad target {target!r}: {exc}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lstm_service.service.proc.healthcheck",
        description="Exit 0 when the gRPC server at TARGET reports SERVING, 1 otherwise.",
    )
    parser.add_argument("--target", default=None,
                        help="host:port to ask [default 127.0.0.1:$LSTM_PORT, else 127.0.0.1:50051]")
    parser.add_argument("--service", default="",
                        help="service name to ask about; empty: the server as a whole [default empty]")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer [default 3]")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on a usage error; Docker reserves 2
        return 0 if exc.code == 0 else 1
    target = args.target or default_target()
    ok, seen = check(target, args.service, args.timeout)
    if not args.quiet:
        print(f"{target} {args.service or '(server)'}: {seen}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
