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
                        await before_reply(self.engine)
                        yield response
            except BaseException as raised:
                await before_reply(self.engine, raised)
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
            response = await method(self, check_decoded(request), context)
            await before_reply(self.engine)
            return response
        except BaseException as exc:
            await before_reply(self.engine, exc)
            code, abort = error_status.for_exception(name, context, exc)
            if abort is None:
                raise
            await abort_call(context, abort)
        finally:
            self.finish(name, code, admitted)

    return handler


async def before_reply(engine, raised: Optional[BaseException] = None) -> None:
    """Wait until what this call committed has reached the engine (``engine.written()``: with
    --fronts a commit is a frame written with the others of its loop turn, and a reply must not
    leave before it). Before an error status too (a call can fail after its commit); an error
    while waiting (the link closed) replaces a reply, not an error already on its way."""
    if raised is not None and not isinstance(raised, Exception):
        return  # cancelled, or the generator closed: nothing goes out, and it may not wait
    waiting = engine.written()
    if waiting is None:
        return
    try:
        await waiting
    except Exception:  # (a cancel while waiting goes on up)
        if raised is None:
            raise


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
