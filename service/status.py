"""Exceptions -> gRPC status, in one place, with google.rpc.Status details.

Every error the service sends carries, besides the code and message, a
``grpc-status-details-bin`` trailer (the standard rich error model, read by
grpcio-status and every other gRPC stack's equivalent): ErrorInfo with a
stable reason, BadRequest field violations for INVALID_ARGUMENT, and RetryInfo
where a retry makes sense. The ``retry-after-ms`` trailer says the same as
RetryInfo and is kept for one release.

An unexpected exception is a bug: the client gets INTERNAL with a request id
and no Python class names or onnxruntime internals; the log line has the
same id and the whole story.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Optional, Tuple

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from .errors import ServiceError

log = logging.getLogger("service.status")
CODES = {code.name: code for code in grpc.StatusCode}
DOMAIN = "lstm.v1"
DETAILS_KEY = "grpc-status-details-bin"
Abort = Tuple[grpc.StatusCode, str, tuple]


def rich_status(code: str, message: str, reason: str, field: Optional[str] = None,
                metadata: Optional[dict] = None, retry_after_ms: Optional[int] = None) -> status_pb2.Status:
    status = status_pb2.Status(code=CODES[code].value[0], message=message)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    status.details.add().Pack(info)
    if code == "INVALID_ARGUMENT":  # always, naming the field where one is at fault ("" for the whole request)
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=field or "", description=message)
        status.details.add().Pack(bad)
    if retry_after_ms:
        seconds, ms = divmod(int(retry_after_ms), 1000)
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds, nanos=ms * 1_000_000))
        status.details.add().Pack(retry)
    return status


def trailers(status: status_pb2.Status, retry_after_ms: Optional[int]) -> tuple:
    pairs = [(DETAILS_KEY, status.SerializeToString())]
    if retry_after_ms:
        pairs.append(("retry-after-ms", str(retry_after_ms)))
    return tuple(pairs)


def for_service_error(exc: ServiceError) -> Abort:
    status = rich_status(exc.code, exc.message, exc.reason, exc.field, exc.metadata, exc.retry_after_ms)
    if exc.detail:
        log.warning("%s (%s): %s", exc.code, exc.reason, exc.detail)
    return CODES[exc.code], exc.message, trailers(status, exc.retry_after_ms)


def for_exception(method: str, context, exc: BaseException) -> Tuple[str, Optional[Abort]]:
    """(status name for metrics, what to abort with; None: let grpc end the call as it is)."""
    if isinstance(exc, ServiceError):
        if exc.code == "CANCELLED":  # the engine refused to commit for a call that was ending
            remaining = context.time_remaining()
            if remaining is not None and remaining < 0.01:
                return "DEADLINE_EXCEEDED", (grpc.StatusCode.DEADLINE_EXCEEDED, exc.message, ())
        return exc.code, for_service_error(exc)
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        return ("DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"), None
    if isinstance(exc, grpc.aio.AbortError):
        return "ABORTED_BY_HANDLER", None
    if isinstance(exc, Exception):  # a bug: say so, keep serving
        request_id = secrets.token_hex(6)
        log.error("unexpected error in %s (request %s)", method, request_id, exc_info=exc)
        message = f"internal error in {method} (request {request_id}); the server log has the details"
        status = rich_status("INTERNAL", message, "INTERNAL", metadata={"request_id": request_id})
        return "INTERNAL", (grpc.StatusCode.INTERNAL, message, trailers(status, None))
    return "UNKNOWN", None
