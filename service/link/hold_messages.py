"""The link's messages for holds: a stream's or a unary step's hold on a session, the
steps run under it, and how it ends (commit, deferred commit, release). One type per
op, each with its request and reply encode/decode pairs (link/messages.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import numpy as np

from ..api.options import StepOptions
from ..api.values import Caller, Remembrance, SessionInfo, StepResult
from . import wire_values as w
from .ops import Message, Op, SessionMessage, none


@dataclass(slots=True)
class OpenStream(Message):
    session_id: str
    create: bool
    ttl: float
    end_with_stream: bool
    caller: Caller
    remember: Optional[Remembrance] = None  # the session's record kept under this request id

    op: ClassVar[Op] = Op.OPEN_STREAM
    makes_key: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.session_id, self.create, self.ttl, self.end_with_stream, w.encode_caller(self.caller),
                w.encode_remembrance(self.remember)]

    @classmethod
    def decode(cls, body: list) -> "OpenStream":
        return cls(body[0], bool(body[1]), body[2], bool(body[3]), w.decode_caller(body[4]),
                   w.decode_remembrance(body[5]))

    @staticmethod
    def encode_reply(reply: Tuple[int, SessionInfo]) -> list:
        return [reply[0], w.encode_info(reply[1])]

    @staticmethod
    def decode_reply(body: list) -> Tuple[int, SessionInfo]:
        return body[0], w.decode_info(body[1])

    @staticmethod
    def key_of(body: list) -> int:
        return body[0]


@dataclass(slots=True)
class Hold(SessionMessage):
    op: ClassVar[Op] = Op.HOLD
    makes_key: ClassVar[bool] = True

    @staticmethod
    def encode_reply(reply: Tuple[int, int]) -> list:
        return [reply[0], reply[1]]  # the key, the session's steps

    @staticmethod
    def decode_reply(body: list) -> Tuple[int, int]:
        return body[0], body[1]

    @staticmethod
    def key_of(body: list) -> int:
        return body[0]


@dataclass(slots=True)
class HoldYielding(Hold):
    """A hold that gives its session up between steps when another call asks (core/hold.py);
    the engine takes it again at its next RUN, so the front never learns it was away."""

    op: ClassVar[Op] = Op.HOLD_YIELDING


@dataclass(slots=True)
class Run(Message):
    """A step under a held key, held in the engine until COMMIT, DEFERRED_COMMIT or RELEASE."""

    key: int
    ids: np.ndarray
    options: StepOptions
    start: bool
    expected_steps: Optional[int]

    op: ClassVar[Op] = Op.RUN
    runs_under_key: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.key, w.encode_ids(self.ids), w.encode_step_options(self.options), self.start,
                self.expected_steps]

    @classmethod
    def decode(cls, body: list) -> "Run":
        ids = w.decode_ids(body[1])
        assert ids is not None
        return cls(body[0], ids, w.decode_step_options(body[2]), bool(body[3]), body[4])

    encode_reply = staticmethod(w.encode_result)
    decode_reply = staticmethod(w.decode_result)


@dataclass(slots=True)
class ReadHeldState(Message):
    key: int

    op: ClassVar[Op] = Op.READ_HELD_STATE

    def encode(self) -> list:
        return [self.key]

    @classmethod
    def decode(cls, body: list) -> "ReadHeldState":
        return cls(body[0])

    encode_reply = staticmethod(w.encode_state)
    decode_reply = staticmethod(w.decode_state)


@dataclass(slots=True)
class Commit(Message):
    """One-way: commit the step RUN computed under ``key``."""

    key: int

    op: ClassVar[Op] = Op.COMMIT
    in_order: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.key]

    @classmethod
    def decode(cls, body: list) -> "Commit":
        return cls(body[0])

    encode_reply = decode_reply = staticmethod(none)


@dataclass(slots=True)
class DeferredCommit(Message):
    """One-way: commit the held step if ``wanted`` (and the session lives), then release the hold;
    with ``remember``, the answer is kept under its request id with the commit."""

    key: int
    wanted: bool
    remember: Optional[Remembrance] = None

    op: ClassVar[Op] = Op.DEFERRED_COMMIT
    in_order: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.key, self.wanted, w.encode_remembrance(self.remember)]

    @classmethod
    def decode(cls, body: list) -> "DeferredCommit":
        return cls(body[0], bool(body[1]), w.decode_remembrance(body[2]))

    encode_reply = decode_reply = staticmethod(none)


@dataclass(slots=True)
class EndSession(Message):
    """One-way: end the held session (it is gone once the hold is released)."""

    key: int
    why: str

    op: ClassVar[Op] = Op.END_SESSION
    in_order: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.key, self.why]

    @classmethod
    def decode(cls, body: list) -> "EndSession":
        return cls(body[0], body[1])

    encode_reply = decode_reply = staticmethod(none)


@dataclass(slots=True)
class Release(Message):
    """One-way: end what ``key`` holds (a hold, a generation, a stream slot), committing nothing more."""

    key: int

    op: ClassVar[Op] = Op.RELEASE
    in_order: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.key]

    @classmethod
    def decode(cls, body: list) -> "Release":
        return cls(body[0])

    encode_reply = decode_reply = staticmethod(none)


@dataclass(slots=True)
class ReleaseUnused(Message):
    """One-way: release what a reply named that the front's caller never read (or a create not
    committed): as never used, so a stream that was to end its session with it leaves it."""

    key: int

    op: ClassVar[Op] = Op.RELEASE_UNUSED
    in_order: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.key]

    @classmethod
    def decode(cls, body: list) -> "ReleaseUnused":
        return cls(body[0])

    encode_reply = decode_reply = staticmethod(none)


@dataclass(slots=True)
class Cancel(Message):
    """One-way: the caller of request ``rid`` went away: stop it, or release what it made."""

    rid: int

    op: ClassVar[Op] = Op.CANCEL
    in_order: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.rid]

    @classmethod
    def decode(cls, body: list) -> "Cancel":
        return cls(body[0])

    encode_reply = decode_reply = staticmethod(none)


# -- one-shot steps and creating sessions -----------------------------------------------------------


@dataclass(slots=True)
class Predict(Message):
    session_id: str
    ids: np.ndarray
    options: StepOptions
    start: bool
    expected_steps: Optional[int]
    caller: Caller

    op: ClassVar[Op] = Op.PREDICT
    makes_key: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.session_id, w.encode_ids(self.ids), w.encode_step_options(self.options), self.start,
                self.expected_steps, w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "Predict":
        ids = w.decode_ids(body[1])
        assert ids is not None
        return cls(body[0], ids, w.decode_step_options(body[2]), bool(body[3]), body[4], w.decode_caller(body[5]))

    @staticmethod
    def encode_reply(reply: Tuple[int, StepResult]) -> list:
        return [reply[0], w.encode_result(reply[1])]

    @staticmethod
    def decode_reply(body: list) -> Tuple[int, StepResult]:
        return body[0], w.decode_result(body[1])

    @staticmethod
    def key_of(body: list) -> int:
        return body[0]
