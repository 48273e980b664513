"""When sessions are snapshotted and how they come back (service/durability.py), without a server
or Redis: a real SessionStore on an injected clock, and an in-memory snapshot store that keeps the
records as the bytes Redis would hold (service/snapshot_format.py), so a restore decodes real ones.
(tests/service/test_durability.py runs the same against real processes and a real Redis.)"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pytest

from lstm_service.service.persist.durability import Durability, record_of
from lstm_service.service.api.errors import FailedPrecondition
from lstm_service.service.core.session_ids import SessionName
from lstm_service.service.core.sessions import SessionStore
from lstm_service.service.persist.snapshot_format import Snapshot, decode_snapshot, encode_snapshot
from lstm_service.service.persist.snapshots import STORE_MAGIC

SHA = "a" * 64
ZEROS = (np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32))


class MemorySnapshots:
    """The SnapshotStore calls Durability makes (save, delete, load), over a dict of encoded records."""

    def __init__(self) -> None:
        self.records: Dict[SessionName, bytes] = {}

    def save(self, snapshot: Snapshot) -> None:
        self.records[SessionName(snapshot.owner, snapshot.session_id)] = encode_snapshot(snapshot, STORE_MAGIC)

    def delete(self, name: SessionName) -> None:
        self.records.pop(name, None)

    async def load(self, name: SessionName) -> Optional[Snapshot]:
        data = self.records.get(name)
        return None if data is None else decode_snapshot(data, STORE_MAGIC)

    def steps(self, session) -> Optional[int]:
        data = self.records.get(session.name)
        return None if data is None else decode_snapshot(data, STORE_MAGIC).steps


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(every: int = 4, idle: float = 2.0):
    clock, snapshots = Clock(), MemorySnapshots()
    durability: Optional[Durability] = None
    store = SessionStore(ZEROS, clock=clock, on_event=lambda kind, s, why: durability.on_event(kind, s))
    durability = Durability(store, snapshots, SHA, every, idle)
    return store, snapshots, durability, clock


def step(store: SessionStore, durability: Durability, session, n: int) -> None:
    state = tuple(part + n for part in session.state)
    store.commit(session, state, np.full(8, -2.0, np.float32), n)
    durability.committed(session)


def test_every_n_committed_steps_writes_a_snapshot_record():
    store, snapshots, durability, _ = setup(every=4)
    session = store.create("s-every-000000001")
    step(store, durability, session, 3)
    assert snapshots.steps(session) is None and session.saved_steps == -1
    step(store, durability, session, 1)
    assert snapshots.steps(session) == 4 == session.saved_steps
    step(store, durability, session, 3)
    assert snapshots.steps(session) == 4  # 3 unsaved steps: not yet
    step(store, durability, session, 2)
    assert snapshots.steps(session) == 9


def test_idle_sessions_with_unsaved_steps_are_saved_and_busy_or_saved_ones_are_not():
    store, snapshots, durability, clock = setup(every=0, idle=2.0)
    idle, busy, saved = (store.create(f"s-idle-00000000{i}") for i in range(3))
    for session in (idle, busy, saved):
        step(store, durability, session, 2)
    durability.save(saved)
    store.acquire(busy.id)
    clock.now += 1.0
    assert durability.save_idle() == 0  # not idle long enough
    clock.now += 1.5
    assert durability.save_idle() == 1 and snapshots.steps(idle) == 2
    assert snapshots.steps(busy) is None
    assert durability.save_all() == 1 and snapshots.steps(busy) == 2  # the drain saves the rest


def test_eviction_saves_unsaved_steps_and_deleting_a_session_deletes_its_record():
    store, snapshots, durability, _ = setup(every=0)
    session = store.create("s-evict-00000001")
    step(store, durability, session, 5)
    store._end(session, "evict", "was evicted")  # what _make_room does to the least recently used
    assert snapshots.steps(session) == 5
    other = store.create("s-close-00000001")
    durability.save(other)
    store.close(other)
    assert other.name not in snapshots.records


async def test_a_session_comes_back_from_its_record_exactly():
    store, snapshots, durability, _ = setup(every=1)
    session = store.create("s-restore-000001", owner="alice")
    step(store, durability, session, 3)
    kept = record_of(session, SHA)
    store.delete(session.id, "alice")
    snapshots.save(kept)  # deleting removed it; a replica that never saw the delete still has it
    back = await durability.restore(SessionName("alice", session.id))
    assert back is not None and back.steps == back.saved_steps == 3 and back.owner == "alice"
    assert all(np.array_equal(a, b) for a, b in zip(back.state, kept.state))
    assert np.array_equal(back.last_logprobs, kept.last_logprobs)
    assert await durability.restore(SessionName("alice", session.id)) is back  # held now: the same session
    assert await durability.restore(SessionName("bob", session.id)) is None  # another principal's id


async def test_a_record_written_under_another_model_is_refused():
    store, snapshots, durability, _ = setup()
    other = Snapshot("s-other-model-01", "anonymous", 2, ZEROS, None, 600.0, "b" * 64)
    snapshots.save(other)
    with pytest.raises(FailedPrecondition) as info:
        await durability.restore(SessionName("anonymous", other.session_id))
    assert info.value.reason == "OTHER_MODEL" and len(store) == 0
