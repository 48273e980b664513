"""When a failed call may be sent again, and how long to wait first.

Two kinds of failure are worth a resend. A *refusal* (RESOURCE_EXHAUSTED,
ABORTED: the server said no and changed nothing) is always safe to resend.
A *lost reply* (UNAVAILABLE, DEADLINE_EXCEEDED: the connection or the
deadline went, and the step may or may not have applied) is safe only after
asking the server: the client reads the session's step count and resends,
with ``expected_steps``, only if the step did not apply. The server applies
a step with ``expected_steps`` at exactly that many steps (rewinding to it
from its journal if the session moved on), so even a resend racing the
original ends where one application left the session. Calls that change
session records carry a ``request_id``: a resend gets the first answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import grpc

from .errors import ClientError

LOST_REPLY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
REFUSED = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` sends in all; pauses of ``backoff`` seconds, doubling up to ``max_backoff``,
    or the server's RetryInfo delay when it gives a longer one."""

    attempts: int = 4
    backoff: float = 0.1
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy: attempts >= 1 and non-negative pauses")

    def may_retry(self, error: ClientError, attempt: int) -> bool:
        """Whether a resend may follow the ``attempt``-th (0-based) failed send."""
        return attempt + 1 < self.attempts and error.code() in LOST_REPLY | REFUSED

    def pause(self, error: ClientError, attempt: int) -> float:
        return max(min(self.backoff * 2 ** attempt, self.max_backoff), error.retry_delay or 0.0)


def as_policy(retry: Union[bool, RetryPolicy, None]) -> Optional[RetryPolicy]:
    """True -> the default policy; False/None -> no retries."""
    if isinstance(retry, RetryPolicy):
        return retry
    return RetryPolicy() if retry else None
