"""The engine's session-record operations (get, reset, delete, fork, list, export,
import, read state): each resolved from the snapshot store first, where there is
one, then answered from the session store. A part of ``core.engine.Engine`` (it
mixes this in); only the engine mutates state.
"""
from __future__ import annotations

from typing import List, Optional, Protocol, Tuple

from ..api.engine_base import RecordCommit
from ..api.values import ANYONE, Caller, SessionInfo, State
from ..persist.durability import record_of
from .quotas import Quotas
from .session_ids import SessionName, new_session_id
from .sessions import Session, SessionStore, check_session_id

class EngineParts(Protocol):
    """What the records need of the engine that mixes them in."""

    store: SessionStore
    quotas: Quotas
    model_sha256: str

    async def resolve(self, session_id: str, caller: Caller = ANYONE) -> None: ...

    def session_name(self, session_id: str, caller: Caller = ANYONE, field: str = "session_id") -> SessionName: ...

    def info(self, session: Session, caller: Caller = ANYONE) -> SessionInfo: ...

    def session_of(self, session_id: str, caller: Caller) -> Session: ...

    def record_if_due(self, session: Session) -> None: ...

    async def claim_new(self, name: SessionName, ttl: float) -> Optional[int]: ...

    def claimed_new(self, session: Session, epoch: Optional[int]) -> None: ...


class SessionRecords:
    async def get_session(self: "EngineParts", session_id: str, caller: Caller = ANYONE) -> SessionInfo:
        await self.resolve(session_id, caller)
        return self.info(self.session_of(session_id, caller), caller)

    # reset, delete, fork: every check (and the snapshot store's load) runs here; the commit is one
    # synchronous change, so nothing runs between the caller's last liveness check and it.
    async def reset_deferred(self: "EngineParts", session_id: str, caller: Caller = ANYONE) -> RecordCommit:
        await self.resolve(session_id, caller)
        name = self.session_name(session_id, caller)
        self.store.check_free(name.id, name.owner, "reset it from the stream (step.start) or wait")

        async def commit(wanted: bool = True) -> Optional[SessionInfo]:
            return self.info(self.store.reset(name.id, name.owner), caller) if wanted else None

        return commit

    async def delete_deferred(self: "EngineParts", session_id: str, caller: Caller = ANYONE) -> RecordCommit:
        await self.resolve(session_id, caller)
        name = self.session_name(session_id, caller)
        self.store.check_free(name.id, name.owner, "end that first")

        async def commit(wanted: bool = True) -> Optional[SessionInfo]:
            return self.info(self.store.delete(name.id, name.owner), caller) if wanted else None

        return commit

    async def fork_deferred(self: "EngineParts", session_id: str, new_id: Optional[str], ttl: float,
                            caller: Caller = ANYONE) -> RecordCommit:
        """A copy of the session in its own namespace (an admin's fork of PRINCIPAL/ID is PRINCIPAL's)."""
        if new_id:  # before any lookup, here or in the snapshot store
            check_session_id(new_id, "new_session_id")
        await self.resolve(session_id, caller)
        name = self.session_name(session_id, caller)
        source = self.store.get(name.id, name.owner)
        self.quotas.check_sessions(source.owner, self.store.owned[source.owner])
        fork_name = SessionName(name.owner, new_id or self.store.fork_name(source))  # named first: its lease
        epoch = await self.claim_new(fork_name, ttl or source.ttl)

        async def commit(wanted: bool = True) -> Optional[SessionInfo]:
            if not wanted:
                return None
            # checked again: another call may have taken the last quota slot since
            self.quotas.check_sessions(source.owner, self.store.owned[source.owner])
            fork = self.store.fork(name.id, fork_name.id, ttl, name.owner)
            self.claimed_new(fork, epoch)
            return self.info(fork, caller)

        return commit

    async def list_sessions(self: "EngineParts", limit: int, caller: Caller = ANYONE) -> Tuple[List[SessionInfo], int]:
        """The caller's sessions (an admin's: everyone's, others' as PRINCIPAL/ID), most recently
        used first, and how many."""
        owner = caller.owner
        total = len(self.store) if owner is None else self.store.owned[owner]
        return [self.info(s, caller) for s in self.store.list(limit, owner)], total

    async def export_session(self: "EngineParts", session_id: str, key: bytes,
                             caller: Caller = ANYONE) -> Tuple[bytes, int]:
        """A signed, owner-free blob of the session's state, and its steps (persist/blob.py)."""
        from ..persist.blob import encode_blob

        await self.resolve(session_id, caller)
        session = self.session_of(session_id, caller)
        return encode_blob(record_of(session, self.model_sha256), key), session.steps

    async def import_deferred(self: "EngineParts", blob: bytes, key: bytes, session_id: Optional[str], ttl: float,
                              caller: Caller = ANYONE) -> RecordCommit:
        """A new session, owned by the caller, from an exported blob (made at the commit)."""
        from ..persist.blob import decode_blob

        name = self.session_name(session_id or "", caller)
        if session_id:  # before the blob: a malformed id is refused whatever the blob holds
            check_session_id(name.id)
        record = decode_blob(blob, key, self.model_sha256)  # refuses forged blobs and other models
        self.quotas.check_sessions(name.owner, self.store.owned[name.owner])
        if session_id:
            self.store.check_new_id(name.id, name.owner)
        ttl = self.store.check_ttl(ttl) if ttl else record.ttl
        if not name.id:
            name = SessionName(name.owner, new_session_id())  # named first: its lease is claimed before
        epoch = await self.claim_new(name, ttl)

        async def commit(wanted: bool = True) -> Optional[SessionInfo]:
            if not wanted:
                return None
            self.quotas.check_sessions(name.owner, self.store.owned[name.owner])
            session = self.store.restore(name.id, name.owner, record.state, record.steps, record.last_logprobs, ttl)
            self.claimed_new(session, epoch)
            self.record_if_due(session)
            return self.info(session, caller)

        return commit

    async def read_state(self: "EngineParts", session_id: str, caller: Caller = ANYONE) -> Tuple[int, State]:
        """(steps, state) of the caller's session, read-only (not held, not touched), loaded from
        its snapshot record if need be: for Explain, and tests that compare states bitwise."""
        await self.resolve(session_id, caller)
        session = self.session_of(session_id, caller)
        return session.steps, session.state

