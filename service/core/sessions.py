"""The session store: each session's recurrent state and a small record.
Only the engine (service/core/engine.py) uses it; the gRPC edge never does.

A session's state is one value: a tuple of read-only arrays in the order of
the model card's state_names (h and c, or h alone). It is never changed in
place: a step builds new arrays and ``commit`` swaps them in, so a request
that fails or is cancelled before its commit leaves the session exactly as
it was, and a fork can share the arrays of its source.

Sessions are kept by SessionName (owner, id): each principal has its own
id namespace (service/core/session_ids.py), so a lookup only ever sees the
caller's own sessions, and takes the same path whether or not another
principal uses the same id. ``owner`` below is the namespace.

One writer at a time: ``acquire`` marks a session busy (a stream holds it
for its whole life); a second writer gets SessionBusy. Busy sessions never
expire or get evicted. A yielding holder (``Session.yielder``: a KServe stream
keeping its sequence's session between requests) is asked to give the session
up first, so whoever asks finds it as if nobody held it. Everything here runs
on the event loop thread.
"""
from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass
from collections import Counter
from typing import TYPE_CHECKING, Callable, List, Optional

import numpy as np

from ..api.errors import (AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted,
                          SessionBusy, quote)
from ..api.values import ANONYMOUS, SessionInfo, State
from .session_ids import ID_RULE, SessionName, fork_id, is_valid, new_session_id

if TYPE_CHECKING:
    from .journal import Journal

TOMBSTONES = 4096  # remembered ids of ended sessions, for clearer NOT_FOUND messages


def check_session_id(session_id: str, field: str = "session_id") -> str:
    """The one rule for every call: a malformed id is INVALID_ARGUMENT (it can never name a session)."""
    if not session_id:
        raise InvalidArgument(f"{field} is required", field=field)
    if not is_valid(session_id):
        raise InvalidArgument(f"{field} {quote(session_id)} is not allowed: use {ID_RULE}",
                              field=field, reason="MALFORMED_SESSION_ID")
    return session_id


def frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # as flags.writeable = False, at half the cost (no flags object)
    return array


@dataclass(eq=False)
class Session:
    id: str
    state: State  # read-only arrays [L, H], one per state part
    created: float
    last_used: float
    ttl: float
    steps: int = 0
    last_logprobs: Optional[np.ndarray] = None  # [V]: prediction after the last token, if any
    owner: str = ANONYMOUS
    saved_steps: int = -1  # steps in its last snapshot record (-1: none written yet)
    busy: bool = False
    alive: bool = True
    journal: Optional["Journal"] = None  # its recent steps, to rewind to (core/journal.py)
    # Its lease across replicas (persist/leases.py, with --state-store): the epoch this copy
    # holds (None: none yet), the heartbeat incarnation it was last proven at, the sequence
    # number of its last snapshot write, the steps last written through, and ``lost``: the
    # lease moved while a call held it (that call cannot commit).
    epoch: Optional[int] = None
    lease_seen: int = -1
    write_seq: int = 0
    through: int = -1
    lost: bool = False
    # Its holder's give-up (core/hold.py Hold.give_up): set while a yielding hold has it and is
    # between steps; called, synchronously, when another call asks for the session.
    yielder: Optional[Callable[[], None]] = None

    @property
    def name(self) -> SessionName:
        return SessionName(self.owner, self.id)

    def expires_in(self, now: float) -> float:
        return self.ttl if self.busy else self.ttl - (now - self.last_used)


class SessionStore:
    def __init__(
        self,
        zero_state: State,
        max_sessions: int = 10000,
        default_ttl: float = 600.0,
        max_ttl: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
        on_event: Optional[Callable[[str, Session, str], None]] = None,
    ) -> None:
        self.zeros: State = tuple(frozen(part) for part in zero_state)
        self.max_sessions = max_sessions
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.clock = clock
        self.on_event = on_event or (lambda kind, session, reason: None)
        self._sessions: "OrderedDict[SessionName, Session]" = OrderedDict()  # least recently used first
        self._ended: "OrderedDict[SessionName, str]" = OrderedDict()  # why each recently ended session did
        self.owned: Counter = Counter()  # principal -> sessions held
        self.busy = 0  # sessions held by a writer right now

    def __len__(self) -> int:
        return len(self._sessions)

    def info(self, session: Session) -> SessionInfo:
        now = self.clock()
        return SessionInfo(
            id=session.id, steps=session.steps, age_seconds=max(0.0, now - session.created),
            idle_seconds=0.0 if session.busy else max(0.0, now - session.last_used), ttl_seconds=session.ttl,
            expires_in_seconds=max(0.0, session.expires_in(now)), busy=session.busy,
        )

    # -- lookup ---------------------------------------------------------
    def peek(self, session_id: str, owner: str = ANONYMOUS) -> Optional[Session]:
        """The session if this store holds it (expired or not), without any check or touch."""
        return self._sessions.get(SessionName(owner, session_id))

    def get(self, session_id: str, owner: str = ANONYMOUS) -> Session:
        """The live session ``session_id`` of ``owner``'s namespace, or NotFound saying why not.
        Does not count as use. Other namespaces are never looked at."""
        session = self._sessions.get(SessionName(owner, session_id))
        if session is None:
            check_session_id(session_id)
            why = self._ended.get(SessionName(owner, session_id), "does not exist")
            raise NotFound(f"session {quote(session_id)} {why}")
        if session.expires_in(self.clock()) < 0:
            self._end(session, "expired", f"expired after {session.ttl:g}s idle")
            raise NotFound(f"session {quote(session_id)} expired after {session.ttl:g}s idle")
        return session

    @staticmethod
    def ask_to_yield(session: Session) -> None:
        """Before treating ``session`` as busy: a yielding holder between steps gives it up now."""
        if session.busy and session.yielder is not None:
            session.yielder()

    def acquire(self, session_id: str, owner: str = ANONYMOUS) -> Session:
        """Mark the session busy for one writer; SessionBusy if it already is."""
        session = self.get(session_id, owner)
        self.ask_to_yield(session)
        if session.busy:
            raise SessionBusy(
                f"session {quote(session_id)} is in use by another request or stream; one writer at a time")
        session.busy = True
        self.busy += 1
        self._touch(session)
        return session

    def release(self, session: Session) -> None:
        if session.busy:
            session.busy = False
            self.busy -= 1
        self._touch(session)

    def commit(self, session: Session, state: State, logprobs: np.ndarray, n: int) -> None:
        """Swap in the state after ``n`` more tokens (arrays become read-only)."""
        session.state = tuple(frozen(part) for part in state)
        session.last_logprobs = frozen(logprobs)
        session.steps += n
        self._touch(session)

    def rewound(self, session: Session, state: State, steps: int, logprobs: Optional[np.ndarray]) -> None:
        """Swap in the state the session had after ``steps`` tokens (replayed from its journal)."""
        session.state = tuple(frozen(part) for part in state)
        session.last_logprobs = frozen(logprobs) if logprobs is not None else None
        session.steps = steps
        self._touch(session)

    def _touch(self, session: Session) -> None:
        session.last_used = self.clock()
        if self._sessions.get(session.name) is session:
            self._sessions.move_to_end(session.name)

    # -- lifecycle ------------------------------------------------------
    def check_new_id(self, session_id: str, owner: str = ANONYMOUS, field: str = "session_id") -> None:
        """InvalidArgument or AlreadyExists unless ``session_id`` may name a new session of ``owner``."""
        check_session_id(session_id, field)
        if SessionName(owner, session_id) in self._sessions:
            try:
                self.get(session_id, owner)  # an expired holder frees the id
            except NotFound:
                return
            raise AlreadyExists(f"session {quote(session_id)} already exists; pick another id or attach to it")

    def create(self, session_id: Optional[str] = None, ttl: float = 0, why: str = "was created",
               keep: Optional[Session] = None, owner: str = ANONYMOUS) -> Session:
        """A new session in the zero state, owned by ``owner``. ``keep``: a session that must
        not be evicted to make room."""
        if session_id:
            self.check_new_id(session_id, owner)
        else:
            session_id = new_session_id()
        ttl = self.check_ttl(ttl)
        self._make_room(keep, owner)
        now = self.clock()
        session = Session(id=session_id, state=self.zeros, created=now, last_used=now, ttl=ttl, owner=owner)
        self._sessions[session.name] = session
        self.owned[owner] += 1
        self._ended.pop(session.name, None)
        self.on_event("open", session, why)
        return session

    def check_ttl(self, ttl: float) -> float:
        if not ttl:
            return self.default_ttl
        if not 0 < ttl <= self.max_ttl:
            raise InvalidArgument(f"ttl_seconds {ttl:g} is out of range: allowed 1 to {self.max_ttl:g} (0: default)",
                                  field="ttl_seconds")
        return float(ttl)

    def fork(self, source_id: str, new_id: Optional[str] = None, ttl: float = 0,
             owner: str = ANONYMOUS) -> Session:
        """A copy of ``owner``'s session ``source_id``, in the same namespace."""
        if new_id:  # before the lookup: a malformed new id is refused whether or not the source exists
            check_session_id(new_id, "new_session_id")
        source = self.get(source_id, owner)
        name = new_id or self.fork_name(source)
        fork = self.create(name, ttl or source.ttl, why=f"was forked from {source.id} at step {source.steps}",
                           keep=source, owner=source.owner)
        fork.state, fork.steps, fork.last_logprobs = source.state, source.steps, source.last_logprobs
        self._touch(source)  # reading it is a use
        return fork

    def fork_name(self, source: Session) -> str:
        """A fresh id for a fork of ``source``. Unnamed forks share the parent's routing key, so a
        proxy sends them to this replica, the one that holds the copied state."""
        return fork_id(source.id, taken=lambda candidate: SessionName(source.owner, candidate) in self._sessions)

    def check_free(self, session_id: str, owner: str, what_to_do: str) -> Session:
        """The session, checked before a reset or delete is applied: NOT_FOUND, or ABORTED while a
        call holds it (checked again when applied)."""
        session = self.get(session_id, owner)
        self.ask_to_yield(session)
        if session.busy:
            raise SessionBusy(f"session {quote(session_id)} is in use by a stream or request; {what_to_do}")
        return session

    def reset(self, session_id: str, owner: str = ANONYMOUS) -> Session:
        session = self.get(session_id, owner)
        self.ask_to_yield(session)
        if session.busy:
            raise SessionBusy(f"session {quote(session_id)} is in use; reset it from the stream (step.start) or wait")
        self.clear(session)
        self._touch(session)
        return session

    def clear(self, session: Session) -> None:
        session.state, session.steps, session.last_logprobs = self.zeros, 0, None
        session.journal = None  # counted from zero again: no step before it can be rewound to

    def delete(self, session_id: str, owner: str = ANONYMOUS) -> Session:
        session = self.get(session_id, owner)
        self.ask_to_yield(session)
        if session.busy:
            raise SessionBusy(f"session {quote(session_id)} is in use by a stream or request; end that first")
        self._end(session, "close", "was deleted")
        return session

    def close(self, session: Session, why: str = "was deleted") -> None:
        """End a session its holder owns (its stream ended, sequence end)."""
        if session.alive:
            self._end(session, "close", why)

    def _end(self, session: Session, kind: str, why: str) -> None:
        """kind: close | expired | evict | moved; why: a phrase that follows "session X"."""
        session.alive = False
        if self._sessions.pop(session.name, None) is not None:
            self.owned[session.owner] -= 1
            if not self.owned[session.owner]:
                del self.owned[session.owner]
        self._ended[session.name] = why
        while len(self._ended) > TOMBSTONES:
            self._ended.popitem(last=False)
        self.on_event(kind, session, why)

    def _make_room(self, keep: Optional[Session] = None, owner: str = ANONYMOUS) -> None:
        """Evict the least recently used idle session to make room for one of ``owner``'s.
        Fairness: a principal at or over its share (max sessions / principals holding some)
        only ever evicts its own sessions, so one client cannot wipe out the others'."""
        if len(self._sessions) < self.max_sessions:
            return
        self.reap()
        if len(self._sessions) < self.max_sessions:
            return
        principals = len(self.owned) + (owner not in self.owned)
        over_share = principals > 1 and self.owned[owner] >= self.max_sessions / principals
        for session in self._sessions.values():  # least recently used first
            if over_share and session.owner != owner:
                continue
            if session is not keep:
                self.ask_to_yield(session)
            if not session.busy and session is not keep:
                self._end(
                    session, "evict",
                    f"was evicted (least recently used; at most {self.max_sessions} sessions are kept)",
                )
                return
        if over_share:
            raise ResourceExhausted(
                f"max sessions ({self.max_sessions}) reached and you hold {self.owned[owner]}, your share or more, "
                "all in use; delete or end some of yours", retry_after_ms=1000, reason="SESSION_SHARE",
            )
        raise ResourceExhausted(
            f"max sessions ({self.max_sessions}) reached and every session is in use; "
            "retry later, delete sessions, or raise --max-sessions",
            retry_after_ms=1000, reason="MAX_SESSIONS",
        )

    def reap(self) -> int:
        """End every expired session; the number ended."""
        now = self.clock()
        expired = [s for s in self._sessions.values() if s.expires_in(now) < 0]
        for session in expired:
            self._end(session, "expired", f"expired after {session.ttl:g}s idle")
        return len(expired)

    def list(self, limit: int = 100, owner: Optional[str] = None) -> List[Session]:
        """The most recently used first; only ``owner``'s unless None (an admin)."""
        self.reap()
        sessions = reversed(self._sessions.values())
        if owner is not None:
            sessions = (s for s in sessions if s.owner == owner)
        return list(itertools.islice(sessions, limit))

    def restore(self, session_id: str, owner: str, state: State, steps: int,
                last_logprobs: Optional[np.ndarray], ttl: float) -> Session:
        """A session brought back from a snapshot record or an imported blob."""
        session = self.create(session_id, ttl, why=f"was restored at step {steps}", owner=owner)
        session.state = tuple(frozen(np.array(part, np.float32)) for part in state)
        session.last_logprobs = frozen(np.array(last_logprobs, np.float32)) if last_logprobs is not None else None
        session.steps = session.saved_steps = steps
        return session

    def drop(self, session: Session, why: str) -> None:
        """Let go of this copy (its lease moved to another replica); its snapshot stays."""
        if session.alive:
            self._end(session, "moved", why)

    @staticmethod
    def mark_saved(session: Session) -> None:
        """A snapshot record of ``session`` at its present step was written (durability)."""
        session.saved_steps = session.steps

    def require_live(self, session: Session) -> None:
        if not session.alive:
            raise FailedPrecondition(f"session {quote(session.id)} has ended (deleted or sequence end); open a new one",
                                     reason="SESSION_ENDED")
