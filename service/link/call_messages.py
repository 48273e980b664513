"""The link's messages for the other calls: the front's ping, creating sessions,
generation (one token per GEN_NEXT, committed as it is handed to the front) and the
quotas of calls that hold no session. One type per op, each with its request and
reply encode/decode pairs (link/messages.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import numpy as np

from ..api.options import GenerateOptions, StepOptions
from ..api.values import Caller, Generated, Remembrance, StepResult
from . import wire_values as w
from .ops import KeyReply, Message, Op, none


@dataclass(slots=True)
class Ping(Message):
    """The front's ping, with its request counts since the last one; the pong is the engine's status."""

    front: str
    requests: list  # [[method, code, n], ...]

    op: ClassVar[Op] = Op.PING
    in_order: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.front, self.requests]

    @classmethod
    def decode(cls, body: list) -> "Ping":
        return cls(body[0], body[1])

    @staticmethod
    def encode_reply(status: dict) -> dict:
        return status  # instance, runtime description, store health: a small map

    @staticmethod
    def decode_reply(body: dict) -> dict:
        return body


# -- holds: streams, unary steps, Explain with commit ----------------------------------------------


@dataclass(slots=True)
class Create(Message):
    session_id: Optional[str]
    ttl: float
    prompt: Optional[np.ndarray]
    options: StepOptions
    caller: Caller

    op: ClassVar[Op] = Op.CREATE
    makes_key: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.session_id, self.ttl, w.encode_ids(self.prompt), w.encode_step_options(self.options),
                w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "Create":
        return cls(body[0], body[1], w.decode_ids(body[2]), w.decode_step_options(body[3]), w.decode_caller(body[4]))

    @staticmethod
    def encode_reply(reply: Tuple[int, Optional[StepResult]]) -> list:
        return [reply[0], w.encode_optional_result(reply[1])]

    @staticmethod
    def decode_reply(body: list) -> Tuple[int, Optional[StepResult]]:
        return body[0], w.decode_optional_result(body[1])

    @staticmethod
    def key_of(body: list) -> int:
        return body[0]


@dataclass(slots=True)
class CreateCommit(Message):
    """Create the session CREATE computed (the call is still live): its record. With ``remember``,
    the engine keeps the answer under its request id with the commit."""

    key: int
    remember: Optional[Remembrance] = None

    op: ClassVar[Op] = Op.CREATE_COMMIT

    def encode(self) -> list:
        return [self.key, w.encode_remembrance(self.remember)]

    @classmethod
    def decode(cls, body: list) -> "CreateCommit":
        return cls(body[0], w.decode_remembrance(body[1]))

    encode_reply = staticmethod(w.encode_info)
    decode_reply = staticmethod(w.decode_info)


# -- generation: one token per GEN_NEXT, committed as it is handed to the front ---------------------


@dataclass(slots=True)
class GenOpen(KeyReply):
    session_id: str
    prompt: Optional[np.ndarray]
    options: GenerateOptions
    expected_steps: Optional[int]
    caller: Caller
    remember: Optional[Remembrance] = None  # each token kept under this request id as it is committed

    op: ClassVar[Op] = Op.GEN_OPEN
    in_order: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.session_id, w.encode_ids(self.prompt), w.encode_generate_options(self.options),
                self.expected_steps, w.encode_caller(self.caller), w.encode_remembrance(self.remember)]

    @classmethod
    def decode(cls, body: list) -> "GenOpen":
        return cls(body[0], w.decode_ids(body[1]), w.decode_generate_options(body[2]), body[3],
                   w.decode_caller(body[4]), w.decode_remembrance(body[5]))


@dataclass(slots=True)
class GenNext(Message):
    key: int

    op: ClassVar[Op] = Op.GEN_NEXT
    runs_under_key: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.key]

    @classmethod
    def decode(cls, body: list) -> "GenNext":
        return cls(body[0])

    @staticmethod
    def encode_reply(reply: Optional[Generated]) -> Optional[list]:
        return w.encode_generated(reply)

    @staticmethod
    def decode_reply(body: Optional[list]) -> Optional[Generated]:
        return w.decode_generated(body)


# -- quotas of calls that hold no session ------------------------------------------------------------


@dataclass(slots=True)
class Charge(Message):
    n: int
    caller: Caller

    op: ClassVar[Op] = Op.CHARGE
    in_order: ClassVar[bool] = True

    def encode(self) -> list:
        return [self.n, w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "Charge":
        return cls(int(body[0]), w.decode_caller(body[1]))

    encode_reply = decode_reply = staticmethod(none)


@dataclass(slots=True)
class Slot(KeyReply):
    caller: Caller

    op: ClassVar[Op] = Op.SLOT

    def encode(self) -> list:
        return [w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "Slot":
        return cls(w.decode_caller(body[0]))


# -- request ids (AIP-155): the engine's ledger of answers, shared by every front; each answer is kept
# with its commit (the commit messages carry the request id), so there is no "remember" message ------


@dataclass(slots=True)
class Recall(Message):
    """What an earlier call with this request id kept (None: not seen in the window)."""

    request_id: str
    fingerprint: bytes
    caller: Caller

    op: ClassVar[Op] = Op.RECALL

    def encode(self) -> list:
        return [self.request_id, self.fingerprint, w.encode_caller(self.caller)]

    @classmethod
    def decode(cls, body: list) -> "Recall":
        return cls(body[0], body[1], w.decode_caller(body[2]))

    encode_reply = staticmethod(w.encode_kept)
    decode_reply = staticmethod(w.decode_kept)
