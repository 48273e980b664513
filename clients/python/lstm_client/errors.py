"""ClientError: a refused or failed call, with the server's structured details.

The server attaches a google.rpc.Status to its errors (the
``grpc-status-details-bin`` trailer, as grpcio-status writes it): an
ErrorInfo (a machine-readable ``reason`` and ``metadata``, e.g. the
session's actual ``steps`` when ``expected_steps`` did not match), a
BadRequest (which field was wrong and why) and a RetryInfo (when to try
again). ClientError is a grpc.RpcError, so ``except grpc.RpcError`` and
``.code()`` / ``.details()`` keep working.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_AFTER_KEY = "retry-after-ms"  # the plain-metadata hint the server also sends


class ClientError(grpc.RpcError):
    """A call that ended with a non-OK status."""

    def __init__(self, code: grpc.StatusCode, details: str, *, reason: str = "", domain: str = "",
                 metadata: Optional[Dict[str, str]] = None,
                 field_violations: Tuple[Tuple[str, str], ...] = (),
                 retry_delay: Optional[float] = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details
        self.reason, self.domain = reason, domain
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.field_violations = field_violations  # ((field, description), ...) from BadRequest
        self.retry_delay = retry_delay  # seconds, from RetryInfo (or the retry-after-ms trailer)
        # With retry: True when a lost reply's step did apply (its answer is gone; not resent).
        self.step_applied: Optional[bool] = None

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    @property
    def session_steps(self) -> Optional[int]:
        """The session's actual step count, when the server said (ErrorInfo metadata "steps")."""
        steps = self.metadata.get("steps")
        return int(steps) if steps is not None and steps.isdigit() else None

    def __str__(self) -> str:
        return f"{self._code.name}: {self._details}"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "ClientError":
        """Read code, message and the google.rpc.Status details of a grpc (or grpc.aio) error."""
        if isinstance(error, ClientError):
            return error
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = (error.details() if hasattr(error, "details") else None) or str(error)
        trailers = _trailers(error)
        fields = _status_details(trailers.get(STATUS_DETAILS_KEY))
        if fields.get("retry_delay") is None and trailers.get(RETRY_AFTER_KEY, "").isdigit():
            fields["retry_delay"] = int(trailers[RETRY_AFTER_KEY]) / 1000
        return cls(code or grpc.StatusCode.UNKNOWN, details, **fields)


def _trailers(error: grpc.RpcError) -> Dict[str, object]:
    try:
        trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    except Exception:  # a call that never reached the server has none
        trailing = None
    return {key: value for key, value in (trailing or ())}


def _status_details(blob) -> dict:
    """ErrorInfo, BadRequest and RetryInfo out of a serialized google.rpc.Status."""
    fields: dict = {}
    if not isinstance(blob, bytes):
        return fields
    status = status_pb2.Status.FromString(blob)
    violations: List[Tuple[str, str]] = []
    for detail in status.details:
        info, bad, retry = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            fields.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif detail.Unpack(bad):
            violations += [(v.field, v.description) for v in bad.field_violations]
        elif detail.Unpack(retry):
            fields["retry_delay"] = retry.retry_delay.ToTimedelta().total_seconds()
    if violations:
        fields["field_violations"] = tuple(violations)
    return fields
