"""Exceptions -> gRPC status, in one place, with google.rpc.Status details.

Every error the service sends carries, besides the code and message, a
``grpc-status-details-bin`` trailer (the standard rich error model, read by
grpcio-status and every other gRPC stack's equivalent): ErrorInfo with a
stable reason, BadRequest field violations for INVALID_ARGUMENT, and RetryInfo
where a retry makes sense. The ``retry-after-ms`` trailer says the same as
RetryInfo and is kept for one release.

Every answer is bounded whatever the request held (docs/security.md): the
message to at most MAX_MESSAGE_BYTES of UTF-8, the details trailer to at most
MAX_DETAILS_BYTES serialized. Validators already name only the first few
offenders (errors.summary); this is the backstop for anything that slips by.

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

from ..api.errors import ServiceError

log = logging.getLogger("service.status")
CODES = {code.name: code for code in grpc.StatusCode}
DOMAIN = "lstm.v1"
DETAILS_KEY = "grpc-status-details-bin"
Abort = Tuple[grpc.StatusCode, str, tuple]
MAX_MESSAGE_BYTES = 1024  # the status message (grpc-message), and error_message in a KServe stream reply
MAX_DETAILS_BYTES = 4096  # the serialized google.rpc.Status in grpc-status-details-bin
MAX_FIELD_CHARS = 128  # BadRequest's field path
MAX_METADATA_CHARS = 128  # the reason, and each ErrorInfo metadata key and value
MAX_METADATA_ENTRIES = 4
# The parts' bounds add up under MAX_DETAILS_BYTES: message twice (Status.message and the
# BadRequest description) 2048 + field 128 + reason 128 + metadata 4 x 256 + ~200 of framing.
CUT = " [... cut: {} more bytes]"


def bounded(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (on a character boundary), saying how much went."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    room = limit - len(CUT.format(len(raw)).encode())
    kept = raw[:room].decode("utf-8", "ignore")
    return kept + CUT.format(len(raw) - len(kept.encode("utf-8")))


def _bounded_metadata(metadata: Optional[dict]) -> dict:
    items = list((metadata or {}).items())[:MAX_METADATA_ENTRIES]
    return {bounded(str(k), MAX_METADATA_CHARS): bounded(str(v), MAX_METADATA_CHARS) for k, v in items}


def rich_status(code: str, message: str, reason: str, field: Optional[str] = None,
                metadata: Optional[dict] = None, retry_after_ms: Optional[int] = None) -> status_pb2.Status:
    message = bounded(message)
    status = status_pb2.Status(code=CODES[code].value[0], message=message)
    info = error_details_pb2.ErrorInfo(reason=bounded(reason, MAX_METADATA_CHARS), domain=DOMAIN,
                                       metadata=_bounded_metadata(metadata))
    status.details.add().Pack(info)
    if code == "INVALID_ARGUMENT":  # always, naming the field where one is at fault ("" for the whole request)
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=bounded(field or "", MAX_FIELD_CHARS), description=message)
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
    return CODES[exc.code], status.message, trailers(status, exc.retry_after_ms)


def for_exception(method: str, context, exc: BaseException) -> Tuple[str, Optional[Abort]]:
    """(status name for metrics, what to abort with; None: let grpc end the call as it is)."""
    if isinstance(exc, ServiceError):
        if exc.code == "CANCELLED":  # the engine refused to commit for a call that was ending
            remaining = context.time_remaining()
            if remaining is not None and remaining < 0.01:
                return "DEADLINE_EXCEEDED", (grpc.StatusCode.DEADLINE_EXCEEDED, bounded(exc.message), ())
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
