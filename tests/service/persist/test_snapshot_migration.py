"""The one-pass move of snapshot records written before ids were per principal
(service/snapshot_migration.py), on a real redis-server (skipped without one)."""
from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from lstm_service.service.core.session_ids import SessionName
from lstm_service.service.persist.snapshot_format import Snapshot, encode_snapshot
from lstm_service.service.persist.snapshot_migration import migrate_legacy_keys
from lstm_service.service.persist.snapshots import KEY_PREFIX, STORE_MAGIC, key_of
from redis_helpers import running_redis

STATE = (np.ones((2, 4), np.float32), np.zeros((2, 4), np.float32))


def record(session_id: str, owner: str, steps: int) -> bytes:
    return encode_snapshot(Snapshot(session_id, owner, steps, STATE, None, 600.0, "a" * 64), STORE_MAGIC)


@pytest.fixture
def redis_server(tmp_path):
    yield from running_redis(tmp_path)


async def test_legacy_records_move_to_their_owners_key_keeping_ttl_and_newer_records(redis_server):
    client = aioredis.from_url(redis_server.url)
    try:
        await client.set(KEY_PREFIX + "old-session-00001", record("old-session-00001", "alice", 5), ex=300)
        await client.set(KEY_PREFIX + "both-session-0001", record("both-session-0001", "bob", 3))
        newer = record("both-session-0001", "bob", 9)
        await client.set(key_of(SessionName("bob", "both-session-0001")), newer)
        await client.set(KEY_PREFIX + "not-a-snapshot-01", b"garbage")  # left for a load to report
        moved = await migrate_legacy_keys(client, KEY_PREFIX, STORE_MAGIC, key_of)
        assert moved == 2  # both legacy keys retired
        alice = key_of(SessionName("alice", "old-session-00001"))
        assert await client.get(alice) == record("old-session-00001", "alice", 5)
        assert 0 < await client.ttl(alice) <= 300
        assert await client.get(KEY_PREFIX + "old-session-00001") is None
        assert await client.get(key_of(SessionName("bob", "both-session-0001"))) == newer  # the newer one wins
        assert await client.get(KEY_PREFIX + "both-session-0001") is None
        assert await client.get(KEY_PREFIX + "not-a-snapshot-01") == b"garbage"
        assert await migrate_legacy_keys(client, KEY_PREFIX, STORE_MAGIC, key_of) == 0  # a second pass: nothing
    finally:
        await client.aclose()
