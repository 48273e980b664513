"""Request ids at the edge (AIP-155): a call that carries ``request_id`` is answered from the
engine's ledger if an earlier call with that id was OK (the same answer, nothing applied
again), else runs and has its OK answer kept, right after its commit and before its reply.

The fingerprint is the method and the request without its id: a retry must resend the same
request (the ledger refuses the id for another one). The engine keeps the ledger
(core/request_ledger.py), so every front shares it.
"""
from __future__ import annotations

import hashlib
import re
from typing import Awaitable, Callable, Type, TypeVar

from ..api.engine import EngineApi
from ..api.errors import InvalidArgument, quote
from ..api.values import Caller

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

R = TypeVar("R")


def check_request_id(request_id: str) -> None:
    if not REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument(
            f"request_id {quote(request_id)} is not allowed: 1 to 128 characters of A-Z a-z 0-9 . _ : - "
            "(a UUID is a good choice); nothing was applied", field="request_id")


def fingerprint(method: str, request) -> bytes:
    body = type(request)()
    body.CopyFrom(request)
    body.request_id = ""
    return hashlib.sha256(method.encode() + b"\0" + body.SerializeToString(deterministic=True)).digest()


async def once(engine: EngineApi, method: str, request, caller: Caller, reply_type: Type[R],
               run: Callable[[], Awaitable[R]]) -> R:
    """``run()``'s reply, or the reply an earlier OK call with the same request id got."""
    request_id = request.request_id
    if not request_id:
        return await run()
    check_request_id(request_id)
    print_ = fingerprint(method, request)
    answer = await engine.recall(request_id, print_, caller)
    if answer is not None:
        return reply_type.FromString(answer)  # type: ignore[attr-defined]
    reply = await run()
    await engine.remember(request_id, print_, reply.SerializeToString(), caller)  # type: ignore[attr-defined]
    return reply
