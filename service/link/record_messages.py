"""The link's messages for session records (GetSession ... ReadState): one type per
op, each with its request and reply encode/decode pairs (as link/messages.py).
Reset, delete, fork and import are two-phase, like CREATE: the op is checked and
keyed, then RECORD_COMMIT applies it only while the front's call is live."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional, Tuple

from ..api.values import Caller, Remembrance, SessionInfo, State
from . import wire_values as w
from .ops import KeyReply, Message, Op, SessionMessage


@dataclass(slots=True)
class RecordCommit(Message):
    """Apply the record op (reset, delete, fork, import) checked under ``key``: the front's call
    is still live. The reply is the session's record after it. With ``remember``, the engine
    keeps the answer under its request id with the commit (whatever happens to the call after)."""

    key: int
    remember: Optional[Remembrance] = None

    op: ClassVar[Op] = Op.RECORD_COMMIT

    def encode(self) -> list:
        return [self.key, w.encode_remembrance(self.remember)]

    @classmethod
    def decode(cls, body: list) -> "RecordCommit":
        return cls(body[0], w.decode_remembrance(body[1]))

    encode_reply = staticmethod(w.encode_info)
    decode_reply = staticmethod(w.decode_info)


@dataclass(slots=True)
class GetSession(SessionMessage):
    op: ClassVar[Op] = Op.GET_SESSION

    encode_reply = staticmethod(w.encode_info)
    decode_reply = staticmethod(w.decode_info)


@dataclass(slots=True)
class ResetSession(SessionMessage, KeyReply):
    op: ClassVar[Op] = Op.RESET_SESSION


@dataclass(slots=True)
class RewindSession(KeyReply):
    session_id: str
    steps: int
    caller: Caller

    op: ClassVar[Op] = Op.REWIND_SESSION

    def encode(self) -> list:
        return [self.session_id, self.steps, w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "RewindSession":
        return cls(body[0], body[1], w.decode_caller(body[2]))


@dataclass(slots=True)
class DeleteSession(SessionMessage, KeyReply):
    op: ClassVar[Op] = Op.DELETE_SESSION


@dataclass(slots=True)
class ForkSession(KeyReply):
    session_id: str
    new_id: Optional[str]
    ttl: float
    caller: Caller

    op: ClassVar[Op] = Op.FORK_SESSION

    def encode(self) -> list:
        return [self.session_id, self.new_id, self.ttl, w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "ForkSession":
        return cls(body[0], body[1], body[2], w.decode_caller(body[3]))


@dataclass(slots=True)
class ListSessions(Message):
    limit: int
    caller: Caller

    op: ClassVar[Op] = Op.LIST_SESSIONS

    def encode(self) -> list:
        return [self.limit, w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "ListSessions":
        return cls(body[0], w.decode_caller(body[1]))

    @staticmethod
    def encode_reply(reply: Tuple[List[SessionInfo], int]) -> list:
        return [[w.encode_info(i) for i in reply[0]], reply[1]]

    @staticmethod
    def decode_reply(body: list) -> Tuple[List[SessionInfo], int]:
        return [w.decode_info(i) for i in body[0]], body[1]


@dataclass(slots=True)
class ExportSession(Message):
    session_id: str
    key: bytes  # the signing key (--session-key-file)
    caller: Caller

    op: ClassVar[Op] = Op.EXPORT_SESSION

    def encode(self) -> list:
        return [self.session_id, self.key, w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "ExportSession":
        return cls(body[0], body[1], w.decode_caller(body[2]))

    @staticmethod
    def encode_reply(reply: Tuple[bytes, int]) -> list:
        return [reply[0], reply[1]]  # the blob, the session's steps

    @staticmethod
    def decode_reply(body: list) -> Tuple[bytes, int]:
        return body[0], body[1]


@dataclass(slots=True)
class ImportSession(KeyReply):
    blob: bytes
    key: bytes
    session_id: Optional[str]
    ttl: float
    caller: Caller

    op: ClassVar[Op] = Op.IMPORT_SESSION

    def encode(self) -> list:
        return [self.blob, self.key, self.session_id, self.ttl, w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "ImportSession":
        return cls(body[0], body[1], body[2], body[3], w.decode_caller(body[4]))


@dataclass(slots=True)
class ReadState(SessionMessage):
    op: ClassVar[Op] = Op.READ_STATE

    @staticmethod
    def encode_reply(reply: Tuple[int, State]) -> list:
        return [reply[0], w.encode_state(reply[1])]

    @staticmethod
    def decode_reply(body: list) -> Tuple[int, State]:
        return body[0], w.decode_state(body[1])
