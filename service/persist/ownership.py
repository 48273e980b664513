"""One owner per session across replicas, the engine's side (a part of
service/persist/durability.py's Durability, which mixes it in): taking a session's lease
with its snapshot, or having its live owner hand it over (persist/handoff.py); proving the
lease before a commit and re-verifying it after a heartbeat lapse; the lease of a new
session; write-through writes; the owner's side of a handoff; releasing every lease on a
drain. The lease scripts themselves are persist/leases.py; docs/durability.md says what
holds under which assumptions.
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from ..api.errors import AlreadyExists, SessionBusy, Unavailable, quote
from ..core.session_ids import SessionName
from ..core.sessions import Session, SessionStore

if TYPE_CHECKING:
    from .handoff import Handoff
    from .leases import Leases

HANDOFF_WAIT = 0.4  # seconds an asker waits for the owner's answer (more than BUSY_WAIT) before asking Redis again
BUSY_WAIT = 0.2  # seconds an owner waits for the session's current call to end before answering busy
POLL = 0.05  # seconds between lease polls while a silent owner's heartbeat runs out

log = logging.getLogger("service.ownership")


class Ownership:
    """Lease-holding for Durability; every method needs ``leases`` set (with --state-store)."""

    store: SessionStore
    snapshots: Any  # a persist.snapshots.SnapshotStore
    model_sha256: str
    write_through: bool
    leases: "Leases"
    handoff: "Handoff"
    _taking: Dict[SessionName, asyncio.Task]

    def save(self, session: Session) -> None:  # Durability's
        raise NotImplementedError

    def check_model(self, name: SessionName, snap) -> None:  # Durability's
        raise NotImplementedError

    async def _take(self, name: SessionName) -> Optional[Session]:
        """The session with its lease: one take per session at a time (concurrent calls share it)."""
        task = self._taking.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._take_lease(name))
            self._taking[name] = task
            task.add_done_callback(lambda _: self._taking.pop(name, None))
        return await asyncio.shield(task)

    async def _take_lease(self, name: SessionName) -> Optional[Session]:
        from .snapshots import REDIS_ERRORS, key_of, legacy_key_of

        leases, key = self.leases, key_of(name)
        migrated = False
        if not self.snapshots.healthy:
            return None  # as without leases: Redis down, nobody can hold it elsewhere either
        if self.snapshots.pending_for(name):  # our own write (an evicted copy) lands first
            await self.snapshots.flush(1.0)
        deadline = leases.clock() + 2 * leases.ttl + HANDOFF_WAIT
        while True:
            try:
                taken = await leases.acquire(name, key, legacy_key_of(name))
            except REDIS_ERRORS as exc:
                self.snapshots._mark_down(exc)
                self.snapshots._count("unavailable")
                return None
            if taken.kind == "none":
                if taken.snapshot is not None and not migrated:  # a pre-namespace key: this owner's only
                    migrated = True
                    if self.snapshots._migrated(name, taken.snapshot) is not None:
                        await self.snapshots.flush(1.0)
                        continue  # under its namespaced key now: take it with its lease
                    return None
                self.snapshots._count("miss")
                return None
            if taken.kind == "took":
                self.snapshots._count("hit")
                return self._took(name, taken.epoch, taken.snapshot)
            answer = await self.handoff.ask(taken.owner, name, taken.epoch, HANDOFF_WAIT)
            if answer is not None and answer.get("r") == "busy":
                raise SessionBusy(f"session {quote(name.id)} is in use by a request or stream on another replica; "
                                  "one writer at a time")
            if answer is None:  # no answer: the owner may be dead; its heartbeat says so within the TTL
                if leases.clock() > deadline:
                    raise Unavailable(
                        f"session {quote(name.id)} is held by another replica that neither handed it over nor "
                        "expired in time; retry", retry_after_ms=int(leases.lease_ms), reason="LEASE_HELD")
                await asyncio.sleep(POLL)

    def _took(self, name: SessionName, epoch: int, data) -> Optional[Session]:
        from .snapshots import STORE_MAGIC
        from .snapshot_format import SnapshotFormatError, decode_snapshot

        try:
            snap = decode_snapshot(bytes(data), STORE_MAGIC)
        except SnapshotFormatError as exc:
            log.warning("snapshot of %s/%s unreadable: %s", name.owner, name.id, exc)
            return None
        if (snap.owner, snap.session_id) != name:
            return None
        self.check_model(name, snap)
        held = self.store.peek(name.id, name.owner)
        if held is not None:
            self.store.drop(held, "was taken up again from its snapshot")
        self.snapshots.forget(name)
        log.debug("session taken up with its lease: owner=%s id=%s steps=%d epoch=%d",
                 name.owner, name.id, snap.steps, epoch)
        session = self.store.restore(name.id, name.owner, snap.state, snap.steps, snap.last_logprobs, snap.ttl)
        session.epoch, session.lease_seen, session.through = epoch, self.leases.incarnation, snap.steps
        return session

    def _fenced(self, name: SessionName, epoch: int) -> None:
        """A write of ``name`` under ``epoch`` was refused: the lease moved; drop that copy."""
        session = self.store.peek(name.id, name.owner)
        if session is not None and session.epoch == epoch:
            self.lose(session)

    def lose(self, session: Session) -> None:
        """The lease of ``session`` is another replica's now: drop this copy (a call holding it
        fails at its commit, changing nothing)."""
        log.warning("session lease moved to another replica: owner=%s id=%s epoch=%s",
                    session.owner, session.id, session.epoch)
        session.lost = True
        if not session.busy:
            self.store.drop(session, "moved to another replica")

    def proven(self, session: Session, slack: float = 0.0) -> bool:
        return self.leases is None or (not session.lost and session.epoch is not None
                                       and self.leases.proven(session.lease_seen, slack))

    async def confirm(self, session: Session, slack: float = 0.0) -> bool:
        """Is this copy's lease still ours? Re-verified in Redis when the local proof is not
        current (heartbeat lapsed, e.g. the process was paused). False: the copy was dropped.
        While Redis is unreachable nobody can take a lease, so the copy goes on serving.
        ``slack``: re-verify (and so renew) unless the proof holds that much longer, so the
        commit that follows still finds it current."""
        from .snapshots import REDIS_ERRORS

        if self.proven(session, slack):
            return True
        if session.lost:
            self.lose(session)
            return False
        if not self.snapshots.healthy:
            return True
        try:
            if session.epoch is None:  # made while Redis was down: claim it now
                taken = await self.leases.claim(session.name, "", _ms(min(session.ttl, 10 * 365 * 86400.0)))
                if taken.kind != "took":
                    self.lose(session)
                    return False
                session.epoch, session.lease_seen, session.write_seq = taken.epoch, self.leases.incarnation, 0
                self.save(session)
                return True
            ours, incarnation = await self.leases.verify(session.name, session.epoch)
        except REDIS_ERRORS as exc:
            self.snapshots._mark_down(exc)
            return True
        if not ours:
            self.lose(session)
            return False
        session.lease_seen = incarnation
        return True

    def require_lease(self, session: Session) -> None:
        """Right before a commit: Unavailable (nothing changes) unless this copy's lease is
        proven current. No Redis call: ``confirm`` ran before, in the call's async part."""
        if self.leases is None or (self.proven(session) or (not self.snapshots.healthy and not session.lost)):
            return
        if not session.lost:
            session.lease_seen = -1  # the next call re-verifies
        raise Unavailable(f"session {quote(session.id)} moved to another replica (this one lost its lease while "
                          "the call ran); nothing was changed, retry", retry_after_ms=10, reason="LEASE_MOVED")

    async def claim(self, name: SessionName, ttl: float) -> Optional[int]:
        """Take the lease of a new session (AlreadyExists if a live replica holds one of that
        name); its epoch, or None if Redis cannot be reached (the session is claimed later)."""
        from .snapshots import REDIS_ERRORS, key_of

        if self.leases is None:
            return None
        try:
            taken = await self.leases.claim(name, key_of(name), _ms(ttl))
        except REDIS_ERRORS as exc:
            self.snapshots._mark_down(exc)
            if self.write_through:
                raise _store_down(name) from exc
            return None
        if taken.kind != "took":
            raise AlreadyExists(f"session {quote(name.id)} already exists (held by another replica); "
                                "pick another id or attach to it")
        return taken.epoch

    def claimed(self, session: Session, epoch: Optional[int]) -> None:
        """``session`` was made under the lease ``claim`` took."""
        session.epoch, session.lease_seen = epoch, -1 if epoch is None else self.leases.incarnation

    async def write_now(self, record, session: Optional[Session], epoch: Optional[int]) -> int:
        """Write-through: the snapshot ``record`` (a step not committed yet, or a new session),
        fenced by ``epoch``, awaited. The write's sequence number; Unavailable if it could not
        be written (the lease moved: the copy is dropped; or Redis is unreachable)."""
        from .snapshots import REDIS_ERRORS, STORE_MAGIC, FOREVER_MS, key_of
        from .snapshot_format import encode_snapshot

        name = SessionName(record.owner, record.session_id)
        if epoch is None:
            raise _store_down(name)
        seq = (session.write_seq + 1) if session is not None else 1
        if session is not None:
            session.write_seq = seq
        ttl = record.ttl
        px = _ms(ttl) if math.isfinite(ttl) and ttl > 0 else FOREVER_MS
        self.snapshots.forget(name)  # a queued older write would be skipped anyway (its seq is lower)
        from .leases import lease_key

        try:
            done = await self.leases.script("write")(
                keys=[lease_key(name), key_of(name)],
                args=[self.leases.replica_id, epoch, seq, encode_snapshot(record, STORE_MAGIC), px])
        except REDIS_ERRORS as exc:
            self.snapshots._mark_down(exc)
            raise _store_down(name) from exc
        self.snapshots._count("written" if int(done) else "fenced")
        if int(done) == 0:
            if session is not None:
                self.lose(session)
            raise Unavailable(f"session {quote(name.id)} moved to another replica; nothing was changed, retry",
                              retry_after_ms=10, reason="LEASE_MOVED")
        return seq

    async def hand_over(self, name: SessionName, epoch: int, to: str) -> Tuple[str, int]:
        """The owner's side of a handoff (persist/handoff.py): wait for the session's current call
        to end, write its committed state and give the lease to ``to`` in one script, drop the copy."""
        from .snapshots import REDIS_ERRORS, STORE_MAGIC, FOREVER_MS, key_of
        from .snapshot_format import encode_snapshot

        session = self.store.peek(name.id, name.owner)
        if session is None or session.epoch != epoch or session.lost:
            if self.snapshots.pending_for(name):
                await self.snapshots.flush(1.0)
            try:  # not here: let the lease go if it still names us, so the asker can take it
                await self.leases.transfer(name, key_of(name), epoch, "", b"", 0)
            except REDIS_ERRORS:
                pass
            return "gone", 0
        waited = 0.0
        self.store.ask_to_yield(session)  # a KServe stream between its sequence's steps lets it go at once
        while session.busy:
            if waited >= BUSY_WAIT:
                return "busy", 0
            await asyncio.sleep(0.002)
            waited += 0.002
        if not session.alive or self.store.peek(name.id, name.owner) is not session:
            return "gone", 0
        self.store.acquire(name.id, name.owner)  # no call of ours touches it while it moves
        try:
            ttl = session.ttl
            px = _ms(ttl) if math.isfinite(ttl) and ttl > 0 else FOREVER_MS
            value = encode_snapshot(_record_of(session, self.model_sha256), STORE_MAGIC)
            moved = await self.leases.transfer(name, key_of(name), epoch, to, value, px)
        except REDIS_ERRORS:
            self.store.release(session)
            return "gone", 0
        self.store.release(session)
        self.snapshots.forget(name)
        if moved <= 0:
            self.lose(session)
            return "gone", 0
        self.store.drop(session, "was handed over to another replica")
        return "moved", moved

    async def release_all(self, timeout: float) -> int:
        """Drain: write every session and let its lease go, so other replicas take it up on the
        next call, without waiting for our heartbeat to expire. How many were released."""
        from .snapshots import REDIS_ERRORS, STORE_MAGIC, FOREVER_MS, key_of
        from .snapshot_format import encode_snapshot
        from .leases import lease_key

        held = [s for s in self.store.list(len(self.store)) if s.epoch is not None and not s.lost]
        if not held or not self.snapshots.healthy:
            return 0
        pipe = self.snapshots.redis.pipeline(transaction=False)
        for session in held:
            ttl = session.ttl
            px = _ms(ttl) if math.isfinite(ttl) and ttl > 0 else FOREVER_MS
            value = encode_snapshot(_record_of(session, self.model_sha256), STORE_MAGIC)
            await self.leases.script("transfer")(keys=[lease_key(session.name), key_of(session.name)],
                                                 args=[self.leases.replica_id, session.epoch, "", value, px],
                                                 client=pipe)
            session.lost = True  # no commit after this
            self.store.mark_saved(session)
            self.snapshots.forget(session.name)
        try:
            results = await asyncio.wait_for(pipe.execute(raise_on_error=False), timeout)
        except REDIS_ERRORS as exc:
            log.warning("drain: leases not released (%s); they expire with the heartbeat", exc)
            return 0
        return sum(1 for r in results if r == -1)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _store_down(name: SessionName) -> Unavailable:
    return Unavailable(f"session {quote(name.id)}: the state store cannot be reached and write-through "
                       "(--snapshot-every 1) needs it; nothing was changed, retry", retry_after_ms=500,
                       reason="STATE_STORE_DOWN")


def _record_of(session: Session, model_sha256: str):
    from .durability import record_of  # durability imports this module at its top

    return record_of(session, model_sha256)
