"""The engine's part in session leases across replicas (persist/leases.py, ownership.py,
handoff.py), with ``--state-store``: a new session's lease claimed before its commit, a step's
lease re-verified (and, in write-through mode, its state written) before its commit, and
sessions handed over to a replica that asks. A part of ``core.engine.Engine`` (it mixes
this in); without leases every method here does nothing.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional, Tuple

from ..api.values import State
from .hold import Pending
from .session_ids import SessionName
from .sessions import Session, SessionStore

if TYPE_CHECKING:
    from ..persist.durability import Durability


class SessionLeases:
    durability: Optional["Durability"]
    store: SessionStore
    model_sha256: str

    @property
    def zeros(self) -> State:  # the engine's
        raise NotImplementedError

    def record_if_due(self, session: Session) -> None:  # the engine's
        raise NotImplementedError

    async def hand_over(self, name: SessionName, epoch: int, to: str) -> Tuple[str, int]:
        assert self.durability is not None
        return await self.durability.hand_over(name, epoch, to)

    async def before_commit(self, session: Session, pending: Pending) -> None:
        """After a step ran, before its commit (core/hold.py): the lease re-verified if its proof
        lapsed (Unavailable if it moved), and in write-through mode the new state written (fenced,
        awaited), so an OK reply means the step is in Redis."""
        durability = self.durability
        if durability is None or durability.leases is None:
            return
        if not await durability.confirm(session, slack=durability.leases.ttl / 3):
            durability.require_lease(session)  # raises: the lease moved
        if durability.write_through and session.alive:
            from ..persist.durability import record_of

            result = pending.result
            record = dataclasses.replace(record_of(session, self.model_sha256), steps=result.steps,
                                         state=pending.state, last_logprobs=result.scores.last)
            # Marked before the await: if the call ends non-OK from here on (cancelled during the
            # write, or after it), its release writes the committed state back over it.
            session.through = result.steps
            await durability.write_now(record, session, session.epoch)

    async def claim_created(self, name: SessionName, ttl: float, pending: Optional[Pending]) -> Optional[int]:
        """A new session's lease (None without leases, or while Redis is down); in write-through
        mode its first snapshot written too, before the reply."""
        durability = self.durability
        if durability is None or durability.leases is None:
            return None
        epoch = await durability.claim(name, ttl)
        if durability.write_through:
            from ..persist.snapshots import Snapshot

            record = Snapshot(name.id, name.owner, 0, self.zeros, None, ttl, self.model_sha256)
            if pending is not None:
                record = Snapshot(name.id, name.owner, pending.result.steps, pending.state,
                                  pending.result.scores.last, ttl, self.model_sha256)
            await durability.write_now(record, None, epoch)
        return epoch

    def claimed_created(self, session: Session, epoch: Optional[int], pending: Optional[Pending]) -> None:
        durability = self.durability
        if durability is None or durability.leases is None:
            return
        durability.claimed(session, epoch)
        if durability.write_through:
            session.write_seq = 1
            session.through = pending.result.steps if pending is not None else 0
            if pending is None:
                self.store.mark_saved(session)

    async def claim_new(self, name: SessionName, ttl: float) -> Optional[int]:
        """The lease of a session a fork or import is about to make (None without leases)."""
        if self.durability is None or self.durability.leases is None:
            return None
        return await self.durability.claim(name, self.store.check_ttl(ttl))

    def claimed_new(self, session: Session, epoch: Optional[int]) -> None:
        if self.durability is not None and self.durability.leases is not None:
            self.durability.claimed(session, epoch)
            self.record_if_due(session)

    def unclaim_created(self, name: SessionName, epoch: Optional[int]) -> None:
        """A create that ended non-OK: its lease (and write-through snapshot) go again."""
        if epoch is not None and self.durability is not None:
            self.durability.snapshots.delete(name, (epoch, 0))
