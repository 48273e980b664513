"""The service's own exceptions. Nothing below server.py knows gRPC: each
class names the status it stands for, and server.py maps them in one place
(with google.rpc.Status details: ErrorInfo, BadRequest, RetryInfo).

Messages are for people: say what was wrong and what is allowed, quote
client input only through ``quote`` (bounded), and never name Python
classes or onnxruntime internals; those go in ``detail``, which is logged
server-side with the request id and never sent.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

QUOTE_CHARS = 40
SHOWN_ITEMS = 3  # offenders a message names before it only counts the rest


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` as a quoted prefix: an error message never echoes unbounded client input."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def summary(items: Iterable[object], shown: int = SHOWN_ITEMS) -> str:
    """A bounded account of a client's list: the first few (strings through ``quote``) and how
    many in all, e.g. ``[7, 8, 9] and 99997 more (100000 in all)``; a message never echoes a
    whole repeated field."""
    everything = list(items)
    first: List[str] = [quote(x) if isinstance(x, str) else repr(x)[:QUOTE_CHARS] for x in everything[:shown]]
    text = "[" + ", ".join(first) + "]"
    if len(everything) > shown:
        text += f" and {len(everything) - shown} more ({len(everything)} in all)"
    return text


class ServiceError(Exception):
    """Base class; ``code`` is the name of a gRPC status code, ``reason`` a
    stable UPPER_SNAKE_CASE string a client may switch on (ErrorInfo.reason)."""

    code = "INTERNAL"
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        retry_after_ms: Optional[int] = None,
        reason: Optional[str] = None,
        field: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        detail: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.reason = reason or self.default_reason
        self.field = field  # the request field at fault, for BadRequest (e.g. "input.tokens")
        self.metadata = dict(metadata or {})
        self.detail = detail  # for the server log only


class InvalidArgument(ServiceError):
    """Bad tokens, options or ids; the message gives the allowed range."""

    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    """Unknown, expired, evicted or deleted session; unknown model."""

    code = "NOT_FOUND"
    default_reason = "SESSION_NOT_FOUND"


class AlreadyExists(ServiceError):
    """A client-chosen session id that is already taken."""

    code = "ALREADY_EXISTS"
    default_reason = "SESSION_EXISTS"


class SessionBusy(ServiceError):
    """Another request is using the session right now (one writer at a time)."""

    code = "ABORTED"
    default_reason = "SESSION_BUSY"


class FailedPrecondition(ServiceError):
    """The request cannot apply to the session in its present state."""

    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """A server limit was reached; the message names it."""

    code = "RESOURCE_EXHAUSTED"
    default_reason = "LIMIT_REACHED"


class Unavailable(ServiceError):
    """Not now, nothing changed, retry: the server is draining, the engine or the state store is
    unreachable, or the session moved to another replica (the reason says which)."""

    code = "UNAVAILABLE"
    default_reason = "SHUTTING_DOWN"


class ConfigError(Exception):
    """Bad configuration or model at startup (not a request error)."""


class CallEnded(ServiceError):
    """The call was cancelled or ran out of time before its result could be committed."""

    code = "CANCELLED"
    default_reason = "CALL_ENDED"
