"""The service's own exceptions. Nothing below server.py knows gRPC: each
class names the status it stands for, and server.py maps them in one place.

Messages are for people: say what was wrong and what is allowed.
"""
from __future__ import annotations

from typing import Optional


class ServiceError(Exception):
    """Base class; ``code`` is the name of a gRPC status code."""

    code = "INTERNAL"

    def __init__(self, message: str, retry_after_ms: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_ms = retry_after_ms


class InvalidArgument(ServiceError):
    """Bad tokens, options or ids; the message gives the allowed range."""

    code = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    """Unknown, expired, evicted or deleted session; unknown model."""

    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    """A client-chosen session id that is already taken."""

    code = "ALREADY_EXISTS"


class SessionBusy(ServiceError):
    """Another request is using the session right now (one writer at a time)."""

    code = "ABORTED"


class FailedPrecondition(ServiceError):
    """The request cannot apply to the session in its present state."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """A server limit was reached; the message names it."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    """The server is draining for shutdown."""

    code = "UNAVAILABLE"


class ConfigError(Exception):
    """Bad configuration or model at startup (not a request error)."""
