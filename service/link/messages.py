"""The link's messages, written once for both sides (as vLLM's v1 engine shares its
request types and request-type enum between engine core and client): an ``Op``
per operation and one message type per op, each with its one encode/decode pair
for the request and one for its reply. The front (link/remote_engine.py) builds
and encodes them, the engine (link/engine_host.py) decodes and answers them.

On the wire (link/transport.py) a request is ``[op, rid, body]`` and a reply
``[rid, ok, body]``; rid 0: no reply wanted (a one-way message). Class flags say
how the engine treats each op: ``in_order`` ops are answered as they arrive,
before anything the front sends after them (a commit is seen before the next
step); the others run as tasks. ``makes_key``: the reply names something the
front then holds (``key_of``), which the engine releases unused if the front's
caller is gone.
"""
from __future__ import annotations

from typing import Dict, Type

from .call_messages import Charge, Create, CreateCommit, GenNext, GenOpen, Ping, Recall, Slot
from .hold_messages import (Cancel, Commit, DeferredCommit, EndSession, Hold, HoldYielding, OpenStream, Predict,
                            ReadHeldState, Release, ReleaseUnused, Run)
from .ops import PING_SECONDS, Message, Op
from .record_messages import (DeleteSession, ExportSession, ForkSession, GetSession, ImportSession, ListSessions,
                              ReadState, RecordCommit, ResetSession, RewindSession)

MESSAGES: Dict[Op, Type[Message]] = {cls.op: cls for cls in (
    Ping, OpenStream, Hold, Run, ReadHeldState, Commit, DeferredCommit, EndSession, Release, ReleaseUnused, Cancel,
    Predict, Create, CreateCommit, GenOpen, GenNext, Charge, Slot,
    GetSession, ResetSession, DeleteSession, ForkSession, ListSessions, ExportSession, ImportSession, ReadState,
    RecordCommit, Recall, RewindSession, HoldYielding,
)}
assert set(MESSAGES) == set(Op), "every op has its one message type"

__all__ = ["MESSAGES", "PING_SECONDS", "Message", "Op", *(cls.__name__ for cls in MESSAGES.values())]
