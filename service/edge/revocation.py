"""Revocation that bites: a long-lived call (Stream, Generate, ModelStreamInfer) whose
bearer token a reload of --tokens-file (SIGHUP) took away, or gave to another
principal, ends UNAUTHENTICATED at once instead of serving on with it.

Each such call is tracked from its start with the sha256 of its token and the
principal it was admitted as. A reload marks the calls whose token no longer names
that principal. A marked call that is waiting inside its handler (for the client's
next request, for the model, for a reply to queue) is cancelled there and the
cancellation becomes the UNAUTHENTICATED status; one whose reply grpc is writing
right now is ended as soon as that write is done (cancelling grpc's own write would
end the call CANCELLED, with no status the client could read). Calls that
authenticated with a client certificate alone hold no token and are not tracked: a
certificate is revoked by the CA, not by this file.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional, Set

from ..api.errors import ServiceError

END = object()  # next_response: the handler is done


class CredentialsRevoked(ServiceError):
    code = "UNAUTHENTICATED"
    default_reason = "CREDENTIALS_REVOKED"


class OpenCall:
    """One tracked call: its task, its credential, and whether it may be cancelled now."""

    def __init__(self, task: asyncio.Task, digest: str, caller) -> None:
        self.task, self.digest, self.caller = task, digest, caller
        self.waiting = False  # awaiting inside the handler: a cancel lands in our code
        self.revoked = False

    def check(self) -> None:
        if self.revoked:
            raise revoked()


def revoked() -> CredentialsRevoked:
    return CredentialsRevoked("the token this call was made with has been revoked (the server's tokens file no "
                              "longer holds it); the call is ended: call again with a valid token")


class OpenCalls:
    """The tracked calls of one server process."""

    def __init__(self) -> None:
        self._calls: Set[OpenCall] = set()

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, digest: str, caller) -> OpenCall:
        task = asyncio.current_task()
        assert task is not None, "a call runs in a task"
        call = OpenCall(task, digest, caller)
        self._calls.add(call)
        return call

    def discard(self, call: Optional[OpenCall]) -> None:
        self._calls.discard(call)  # type: ignore[arg-type]

    def end_revoked(self, still_valid: Callable[[str, Any], bool]) -> int:
        """Mark (and where safe, cancel) every call whose token no longer names its caller; how many."""
        ended = 0
        for call in list(self._calls):
            if not call.revoked and not still_valid(call.digest, call.caller):
                call.revoked = True
                ended += 1
                if call.waiting:
                    call.task.cancel()
        return ended


async def next_response(responses, call: Optional[OpenCall]):
    """The handler's next response (``END`` when it is done), ending a revoked call first."""
    if call is not None:
        call.check()
        call.waiting = True
    try:
        return await responses.__anext__()
    except StopAsyncIteration:
        return END
    finally:
        if call is not None:
            call.waiting = False



def as_status(call: Optional[OpenCall], exc: BaseException) -> BaseException:
    """The exception a call ends with: a revoked call's cancellation is UNAUTHENTICATED."""
    if call is not None and call.revoked and isinstance(exc, asyncio.CancelledError):
        call.task.uncancel()  # the cancel was ours, and it is answered: the status is still to be sent
        return revoked()
    return exc
