"""When sessions are written to the snapshot store, and how they come back.

A session is snapshotted (h, c, steps, owner, TTL, the model's sha256):
every ``--snapshot-every`` committed steps, when it has been idle for
``--snapshot-idle-seconds`` with steps not yet saved, when it is evicted,
and for every unsaved session on a graceful drain. Deleting a session
deletes its snapshot; an expired one expires in Redis by its own TTL.
Writes are queued by the store (service/persist/snapshots.py) and never awaited on
the step path. A replica asked for a session it does not hold loads its
snapshot and goes on from the snapshot's step.
"""
from __future__ import annotations

import logging
from typing import Optional

from ..api.errors import FailedPrecondition, quote
from ..core.session_ids import SessionName
from ..core.sessions import Session, SessionStore

log = logging.getLogger("service.durability")


def record_of(session: Session, model_sha256: str):
    """The session as a snapshot record (persist.snapshot_format.Snapshot: what Redis and export blobs hold)."""
    from .snapshots import Snapshot

    return Snapshot(session.id, session.owner, session.steps, session.state, session.last_logprobs,
                    session.ttl, model_sha256)


class Durability:
    """The one holder of the snapshot store (persist/snapshots.py), once the engine attached it."""

    def __init__(self, store: SessionStore, snapshots, model_sha256: str, every: int, idle_seconds: float) -> None:
        self.store = store
        self.snapshots = snapshots  # a service.snapshots.SnapshotStore
        self.model_sha256 = model_sha256
        self.every = every
        self.idle_seconds = idle_seconds

    @property
    def healthy(self) -> bool:
        return bool(self.snapshots.healthy)

    async def flush(self, timeout: float) -> None:
        await self.snapshots.flush(timeout)

    async def close(self) -> None:
        await self.snapshots.close()

    def save(self, session: Session) -> None:
        self.snapshots.save(record_of(session, self.model_sha256))
        self.store.mark_saved(session)

    def committed(self, session: Session) -> None:
        if self.every and session.steps - max(session.saved_steps, 0) >= self.every:
            self.save(session)

    def on_event(self, kind: str, session: Session) -> None:
        if kind == "evict" and session.steps != session.saved_steps:
            self.save(session)
        elif kind == "close":
            self.snapshots.delete(session.name)

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

    async def restore(self, name: SessionName) -> Optional[Session]:
        """The session ``name`` from its snapshot, if there is one; None if not. One store
        read under the namespace's own key, whoever else uses the id (no timing oracle)."""
        snap = await self.snapshots.load(name)
        if snap is None:
            return None
        if snap.model_sha256 != self.model_sha256:
            raise FailedPrecondition(
                f"session {quote(name.id)} was saved by a server running another model "
                f"(sha256 {snap.model_sha256[:12]}...); it cannot continue here", reason="OTHER_MODEL")
        held = self.store.peek(name.id, name.owner)
        if held is not None:  # restored meanwhile by a concurrent call
            return held
        log.info("session restored from its snapshot: owner=%s id=%s steps=%d", name.owner, name.id, snap.steps)
        return self.store.restore(name.id, name.owner, snap.state, snap.steps, snap.last_logprobs, snap.ttl)
