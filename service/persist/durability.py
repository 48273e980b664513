"""When sessions are written to the snapshot store, and how they come back.

A session is snapshotted (h, c, steps, owner, TTL, the model's sha256):
every ``--snapshot-every`` committed steps, when it has been idle for
``--snapshot-idle-seconds`` with steps not yet saved, when it is evicted,
and for every unsaved session on a graceful drain. Deleting a session
deletes its snapshot; an expired one expires in Redis by its own TTL.
Writes are queued by the store (service/persist/snapshots.py) and never awaited on
the step path, except in write-through mode (``--snapshot-every 1``): there a step's
new state is written (fenced) before its commit, so an OK reply means it is in Redis.

Across replicas each session has one owner at a time (service/persist/leases.py): a
replica asked for a session it does not hold takes its lease with the snapshot in one
script, or, when another live replica holds it, asks that one to hand it over
(service/persist/handoff.py); every write is fenced by the lease's epoch, and a copy
whose lease moved is dropped. A commit needs a current proof of the lease
(``require_lease``), re-verified in Redis after a heartbeat lapse (``confirm``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Dict, Optional, Tuple

from ..api.errors import FailedPrecondition, quote
from ..core.session_ids import SessionName
from ..core.sessions import Session, SessionStore
from .ownership import Ownership


log = logging.getLogger("service.durability")


def record_of(session: Session, model_sha256: str):
    """The session as a snapshot record (persist.snapshot_format.Snapshot: what Redis and export blobs hold)."""
    from .snapshots import Snapshot

    return Snapshot(session.id, session.owner, session.steps, session.state, session.last_logprobs,
                    session.ttl, model_sha256)


class Durability(Ownership):
    """The one holder of the snapshot store (persist/snapshots.py), once the engine attached it;
    with leases, also of the sessions' ownership across replicas (persist/ownership.py)."""

    def __init__(self, store: SessionStore, snapshots, model_sha256: str, every: int, idle_seconds: float,
                 leases=None, handoff=None) -> None:
        self.store = store
        self.snapshots = snapshots  # a service.snapshots.SnapshotStore
        self.model_sha256 = model_sha256
        self.every = every
        self.idle_seconds = idle_seconds
        self.leases = leases  # persist.leases.Leases: one owner per session across replicas (None: off)
        self.handoff = handoff  # persist.handoff.Handoff, with leases
        self.write_through = every == 1 and leases is not None
        self._taking: Dict[SessionName, asyncio.Task] = {}  # one lease take per session at a time
        if leases is not None:
            snapshots.leases = leases
            snapshots.on_fenced = self._fenced

    async def start(self) -> None:
        """Leases on: the heartbeat beats and the handoff inbox listens before the first call."""
        if self.leases is None:
            return
        await self.leases.start()
        self.handoff.start()
        try:
            await asyncio.wait_for(self.handoff.ready.wait(), 2.0)
        except asyncio.TimeoutError:  # Redis down: it subscribes when it comes
            pass

    @property
    def healthy(self) -> bool:
        return bool(self.snapshots.healthy)

    async def flush(self, timeout: float) -> None:
        await self.snapshots.flush(timeout)

    async def close(self) -> None:
        if self.leases is not None:
            await self.handoff.close()
            await self.leases.close()
        await self.snapshots.close()

    def save(self, session: Session) -> None:
        if self.leases is None:
            self.snapshots.save(record_of(session, self.model_sha256))
        else:
            self.snapshots.save(record_of(session, self.model_sha256), self._fence(session))
        self.store.mark_saved(session)

    def _fence(self, session: Session) -> Optional[Tuple[int, int]]:
        if session.epoch is None:  # no lease yet (made while Redis was down): unfenced
            return None
        session.write_seq += 1
        return session.epoch, session.write_seq

    def committed(self, session: Session) -> None:
        if self.write_through and session.through == session.steps:  # already in Redis
            self.store.mark_saved(session)
            return
        if self.every and session.steps - max(session.saved_steps, 0) >= self.every:
            self.save(session)

    def on_event(self, kind: str, session: Session) -> None:
        if kind == "evict" and session.steps != session.saved_steps:
            self.save(session)
        elif kind == "close":
            if self.leases is None:
                self.snapshots.delete(session.name)
            else:
                self.snapshots.delete(session.name, None if session.epoch is None else (session.epoch, 0))

    def released(self, session: Session) -> None:
        """A hold on ``session`` ended: a step written through but not committed (the call
        ended non-OK) is overwritten with the committed state (queued, fenced)."""
        if (self.write_through and session.alive and not session.lost and session.through != session.steps
                and session.through >= 0):
            session.through = -1
            self.save(session)

    def save_idle(self) -> int:
        """Snapshot sessions idle long enough with unsaved steps; how many."""
        now = self.store.clock()
        due = [s for s in self.store.list(len(self.store))
               if not s.busy and s.steps != s.saved_steps and now - s.last_used >= self.idle_seconds]
        for session in due:
            self.save(session)
        return len(due)

    def save_all(self) -> int:
        """Snapshot every session with unsaved steps (graceful drain)."""
        due = [s for s in self.store.list(len(self.store)) if s.steps != s.saved_steps]
        for session in due:
            self.save(session)
        return len(due)

    def check_model(self, name: SessionName, snap) -> None:
        """FailedPrecondition unless the snapshot was saved by a server running this model."""
        if snap.model_sha256 != self.model_sha256:
            raise FailedPrecondition(
                f"session {quote(name.id)} was saved by a server running another model "
                f"(sha256 {snap.model_sha256[:12]}...); it cannot continue here", reason="OTHER_MODEL")

    async def restore(self, name: SessionName) -> Optional[Session]:
        """The session ``name`` from its snapshot, if there is one; None if not. One store
        read under the namespace's own key, whoever else uses the id (no timing oracle).
        With leases: the lease taken with it, or handed over by its live owner."""
        if self.leases is not None:
            return await self._take(name)
        snap = await self.snapshots.load(name)
        if snap is None:
            return None
        self.check_model(name, snap)
        held = self.store.peek(name.id, name.owner)
        if held is not None:  # restored meanwhile by a concurrent call
            return held
        log.info("session restored from its snapshot: owner=%s id=%s steps=%d", name.owner, name.id, snap.steps)
        return self.store.restore(name.id, name.owner, snap.state, snap.steps, snap.last_logprobs, snap.ttl)
