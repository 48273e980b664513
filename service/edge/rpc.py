"""The plumbing every servicer's handler runs in (lstm.v1 and KServe v2 alike):
admission, status mapping, request counting, and "is the call still live" for
the commits that wait on it.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from typing import Optional

import grpc

from ..api.errors import CallEnded
from ..api.values import DeferredCommit, Remembrance
from . import error_status, revocation
from .safe_decoding import check_decoded

DEADLINE_MARGIN = 0.002  # seconds: closer to its deadline than this, a call commits nothing


def live_check(context):
    """A callable telling whether the call is still wanted: not cancelled, not (nearly) past its deadline."""

    def live() -> bool:
        if context.done():
            return False
        remaining = context.time_remaining()
        return remaining is None or remaining > DEADLINE_MARGIN

    return live


def commit_if_live(context, commit: DeferredCommit, remember: Optional[Remembrance] = None) -> None:
    """Commit a unary step whose reply is encoded and about to be returned, if the call is
    still live; else commit nothing and end the call (DEADLINE_EXCEEDED or CANCELLED).

    An OK reply always means the step was committed. The reverse has a window no server can
    close: a reply sent with DEADLINE_MARGIN to spare can still reach the client after
    its own deadline, which runs a little ahead of the server's (the request's
    transit). expected_steps and request ids (kept with the commit: ``remember``) are the
    client's tools for that window."""
    if not live_check(context)():
        commit(False)
        raise CallEnded("the call ended (cancelled or past its deadline) before its result was committed")
    if remember is None:
        commit(True)
    else:
        commit(True, remember)


def rpc_handler(method):
    """Wrap a servicer's handler (coroutine or async generator): admit it (refused while
    draining), turn exceptions into their status (edge/error_status.py), count every outcome.
    The servicer has ``admit()``, ``finish(name, code, admitted)`` and ``auth``."""
    name = method.__name__

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_handler(self, request, context):
            code, admitted, call = "OK", False, None
            try:
                admitted = self.admit()
                call = self.auth.track(context)  # a long-lived call: a revoked token ends it (revocation.py)
                async with contextlib.aclosing(method(self, check_decoded(request), context)) as responses:
                    while (response := await revocation.next_response(responses, call)) is not revocation.END:
                        yield response
            except BaseException as raised:
                exc = revocation.as_status(call, raised)
                code, abort = error_status.for_exception(name, context, exc)
                if abort is None:
                    raise
                await abort_call(context, abort)
            finally:
                self.auth.open_calls.discard(call)
                self.finish(name, code, admitted)

        return stream_handler

    @functools.wraps(method)
    async def handler(self, request, context):
        code, admitted = "OK", False
        try:
            admitted = self.admit()
            return await method(self, check_decoded(request), context)
        except BaseException as exc:
            code, abort = error_status.for_exception(name, context, exc)
            if abort is None:
                raise
            await abort_call(context, abort)
        finally:
            self.finish(name, code, admitted)

    return handler


async def abort_call(context, abort) -> None:
    """End the call with its status; if the call is already over (the client cancelled, or its
    deadline passed while the error was being made) there is nobody to tell, and grpc refuses
    to send a status on a finished call (ExecuteBatchError, logged as an ERROR by grpc): end
    the handler as cancelled instead."""
    if context.done():
        raise asyncio.CancelledError()
    try:
        await context.abort(*abort)
    except grpc.aio.AbortError:
        raise  # the normal way out: the status is on its way
    except Exception:  # noqa: BLE001 - grpc's ExecuteBatchError: the call ended while aborting
        raise asyncio.CancelledError() from None
