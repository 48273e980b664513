"""What front processes hold in the engine between messages (a stream's hold, a unary
step waiting for its deferred commit, a create waiting for its commit, a generation,
a stream slot), each under a key the engine gives out and the front names in its
later messages, tagged with the front's connection. Releasing a key commits nothing
its front had not committed.
"""
from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from ..api.engine_base import CreateCommit
from ..core.hold import Hold, Pending
from . import transport

REMEMBERED = 4096  # per front: recent requests whose key a CANCEL can still name


@dataclass
class Held:
    """Something a front holds here between messages, under a key."""

    peer: transport.Connection
    hold: Optional[Hold] = None
    pending: Optional[Pending] = None  # a step run under the hold, not committed yet
    task: Optional[asyncio.Task] = None  # the step or token being computed for it now
    create_commit: Optional[CreateCommit] = None  # a CREATE's or a record op's commit(wanted)
    generation: Any = None  # an Engine.generate async iterator, made at its first token
    start_generation: Optional[Callable[[], Any]] = None
    slot: Any = None  # a quotas.StreamSlot: a stream that holds no session (ModelStreamInfer)


class HeldKeys:
    def __init__(self) -> None:
        self._held: Dict[int, Held] = {}
        self._ids = itertools.count(1)
        self._made: Dict[transport.Connection, "OrderedDict[int, int]"] = {}  # per front: rid -> key

    def __contains__(self, key: int) -> bool:
        return key in self._held

    def __getitem__(self, key: int) -> Held:
        """KeyError: this engine never gave ``key`` out (it restarted) or it was released."""
        return self._held[key]

    def pop(self, key: int) -> Held:
        return self._held.pop(key)

    def hold_of(self, key: int) -> Hold:
        """The hold a front has under ``key`` (KeyError: this engine never gave it out)."""
        hold = self._held[key].hold
        assert hold is not None, "not a hold"
        return hold

    def add(self, held: Held) -> int:
        """A new key for ``held``."""
        key = next(self._ids)
        self._held[key] = held
        if held.peer.closed:  # its front went away while this was being made: nobody will ever name it
            self.release(key)
        return key

    def remember(self, peer: transport.Connection, rid: int, key: int) -> None:
        """Request ``rid`` of ``peer`` made ``key``, for a CANCEL racing its reply."""
        made = self._made.setdefault(peer, OrderedDict())
        made[rid] = key
        if len(made) > REMEMBERED:
            made.popitem(last=False)

    def take_remembered(self, peer: transport.Connection, rid: int) -> Optional[int]:
        made = self._made.get(peer)
        return made.pop(rid) if made is not None and rid in made else None

    def release_front(self, peer: transport.Connection) -> int:
        """Release everything ``peer`` held (its connection closed); how many."""
        self._made.pop(peer, None)
        gone = [key for key, held in self._held.items() if held.peer is peer]
        for key in gone:
            self.release(key)
        return len(gone)

    def release_all(self) -> None:
        for key in list(self._held):
            self.release(key)

    def release(self, key: int, unused: bool = False) -> None:
        """End what a front held under ``key``, committing nothing it had not committed.
        ``unused``: its caller never saw it (cancelled before the reply), so a stream that was
        to end its session with it never opened, as far as the client knows: the session stays."""
        held = self._held.pop(key, None)
        if held is None:
            return
        if held.task is not None and not held.task.done():
            held.task.cancel()
        if held.hold is not None:
            if unused:
                held.hold.end_on_release = False
            held.hold.release()
        if held.generation is not None:
            self._close_generation(held)
        if held.slot is not None:
            held.slot.release()
        if held.create_commit is not None:  # never applied: let it go (a rewind releases its hold)
            asyncio.ensure_future(held.create_commit(False))

    @staticmethod
    def _close_generation(held: Held) -> None:
        async def close() -> None:
            if held.task is not None:
                await asyncio.gather(held.task, return_exceptions=True)  # aclose needs it stopped
            await held.generation.aclose()  # releases its hold

        asyncio.get_running_loop().create_task(close())
