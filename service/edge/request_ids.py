"""Request ids at the edge (AIP-155): a call that carries ``request_id`` is answered from what
the engine kept for an earlier call with that id (the same answer, nothing applied again),
else runs, handing the engine a Remembrance with its commit: the engine keeps the answer in
the same synchronous stretch as the commit (core/request_ledger.py), in both server modes.

An answer is kept in two parts: the reply as far as the edge encoded it before the commit
(a Predict's whole reply, a Create's prompt result), and the session record the commit
gave, which ``fill`` writes into the reply. The first call's reply is built the same way,
so a retry's answer is the first call's, field for field.

The fingerprint is the method and the request without its id: a retry must resend the same
request (the ledger refuses the id for another one). The engine keeps the ledger, so every
front shares it.
"""
from __future__ import annotations

import hashlib
import re
from typing import Awaitable, Callable, Optional, Type, TypeVar

from ..api.engine import EngineApi
from ..api.errors import InvalidArgument, quote
from ..api.values import Caller, Kept, Remembrance, SessionInfo

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

R = TypeVar("R")
Note = Callable[[object], Remembrance]  # the remembrance of a reply encoded as far as it is before the commit
Fill = Callable[[R, SessionInfo], None]  # write the commit's session record into the reply


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


async def recall(engine: EngineApi, method: str, request,
                 caller: Caller) -> "tuple[Optional[Kept], Optional[Remembrance]]":
    """(what an earlier call with the request's id kept, None) or (None, the remembrance for this
    call's commit); (None, None) without a request id."""
    request_id = request.request_id
    if not request_id:
        return None, None
    check_request_id(request_id)
    print_ = fingerprint(method, request)
    kept = await engine.recall(request_id, print_, caller)
    return (kept, None) if kept is not None else (None, Remembrance(request_id, print_))


def replayed(kept: Kept, reply_type: Type[R], fill: Optional[Fill] = None) -> R:
    reply = reply_type.FromString(kept.answer)  # type: ignore[attr-defined]
    if kept.info is not None and fill is not None:
        fill(reply, kept.info)
    return reply


async def once(engine: EngineApi, method: str, request, caller: Caller, reply_type: Type[R],
               run: Callable[[Optional[Note]], Awaitable[R]], fill: Optional[Fill] = None) -> R:
    """``run(note)``'s reply, or the reply an earlier call with the same request id got.
    ``run`` hands the engine ``note(reply so far)`` with its commit (None: no request id)."""
    kept, remembrance = await recall(engine, method, request, caller)
    if kept is not None:
        return replayed(kept, reply_type, fill)
    if remembrance is None:
        return await run(None)
    base = remembrance

    def note(reply) -> Remembrance:
        return Remembrance(base.request_id, base.fingerprint, reply.SerializeToString())

    return await run(note)
