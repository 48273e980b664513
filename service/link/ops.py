"""The link's operations (one message type each: link/messages.py) and its pace."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from ..api.values import Caller
from . import wire_values as w

PING_SECONDS = 0.25  # a front pings this often (the engine's liveness, as the front sees it)


class Op(IntEnum):
    PING = 1
    OPEN_STREAM = 2
    HOLD = 3
    RUN = 4
    READ_HELD_STATE = 5
    COMMIT = 6
    DEFERRED_COMMIT = 7
    END_SESSION = 8
    RELEASE = 9
    RELEASE_UNUSED = 10
    CANCEL = 11
    PREDICT = 12
    CREATE = 13
    CREATE_COMMIT = 14
    GEN_OPEN = 15
    GEN_NEXT = 16
    CHARGE = 17
    SLOT = 18
    GET_SESSION = 19
    RESET_SESSION = 20
    DELETE_SESSION = 21
    FORK_SESSION = 22
    LIST_SESSIONS = 23
    EXPORT_SESSION = 24
    IMPORT_SESSION = 25
    READ_STATE = 26
    RECORD_COMMIT = 27
    RECALL = 28
    # 29 was REMEMBER: an answer is now kept with its commit (the commit messages carry its request id)
    REWIND_SESSION = 30
    HOLD_YIELDING = 31


def none(value: Any) -> None:
    """The reply of a one-way op (there is none)."""
    return None


class Message:
    """What every message type (link/messages.py) has: its op, how the engine treats it, and
    its encode/decode pairs (``encode``/``decode`` for the request, ``encode_reply``/
    ``decode_reply`` for its reply; ``key_of`` for ops that make a held key)."""

    __slots__ = ()
    op: ClassVar[Op]
    in_order: ClassVar[bool] = False  # answered as it arrives, before anything the front sends after it
    makes_key: ClassVar[bool] = False  # its reply names something the front holds (key_of)
    runs_under_key: ClassVar[bool] = False  # runs for a held key (releasing the key cancels it)

    def encode(self) -> list:
        raise NotImplementedError  # pragma: no cover - each message type has its own


def _same_key(key: int) -> int:
    return key


class KeyReply(Message):
    """A message whose reply is just the key the engine made for it (a generation, a stream
    slot, a checked record op that RECORD_COMMIT applies later): the same int both ways."""

    __slots__ = ()
    makes_key: ClassVar[bool] = True
    encode_reply = decode_reply = key_of = staticmethod(_same_key)


@dataclass(slots=True)
class SessionMessage(Message):
    """The body of every op that names one session for a caller (hold, get, reset, delete,
    read state): one encode/decode pair for all of them; each subclass adds its op and reply."""

    session_id: str
    caller: Caller

    def encode(self) -> list:
        return [self.session_id, w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list):
        return cls(body[0], w.decode_caller(body[1]))
