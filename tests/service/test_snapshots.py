"""The Redis snapshot store against a real redis-server (Debian package) on a
free loopback port: bitwise round trips, TTLs, Redis killed or hung mid-run,
the bounded write queue, and the store's metrics."""
from __future__ import annotations

import asyncio
import logging
import struct

import numpy as np
import pytest
from lstm_service.service.api.errors import ConfigError
from lstm_service.service.proc.metrics import Metrics
from lstm_service.service.persist.snapshots import (
    KEY_PREFIX,
    LOAD_TIMEOUT,
    Snapshot,
    check_url,
    open_store,
)
from lstm_service.service.core.session_ids import SessionName
from prometheus_client import generate_latest
from redis_helpers import NEEDS_REDIS, RedisServer, free_port, running_redis

def N(session_id: str) -> SessionName:
    """The name make_snapshot's sessions have (owner alice)."""
    return SessionName("alice", session_id)


HANG_GUARD = 10 * LOAD_TIMEOUT  # a call that takes this long has stalled (not a speed target)
pytestmark = NEEDS_REDIS


@pytest.fixture
def redis_server(tmp_path):
    yield from running_redis(tmp_path)


def make_snapshot(session_id: str = "s1", steps: int = 7, ttl: float = 60.0, seed: int = 0,
                  logprobs: bool = True, parts: int = 2) -> Snapshot:
    rng = np.random.default_rng(seed)
    state = tuple(rng.standard_normal((2, 32)).astype(np.float32) for _ in range(parts))
    state[0][0, 0] = -0.0  # the sign of zero and a NaN payload must survive bit for bit
    state[0][0, 1] = np.frombuffer(struct.pack("<I", 0x7FC0_1234), np.float32)[0]
    last = rng.standard_normal(256).astype(np.float32) if logprobs else None
    return Snapshot(session_id=session_id, owner="alice", steps=steps, state=state, last_logprobs=last,
                    ttl=ttl, model_sha256="ab" * 32)


def assert_bitwise(got: Snapshot, want: Snapshot) -> None:
    assert (got.session_id, got.owner, got.steps, got.ttl, got.model_sha256) == (
        want.session_id, want.owner, want.steps, want.ttl, want.model_sha256)
    assert len(got.state) == len(want.state)
    for a, b in zip(got.state, want.state):
        assert a.dtype == np.float32 and a.shape == b.shape and a.tobytes() == b.tobytes()
    if want.last_logprobs is None:
        assert got.last_logprobs is None
    else:
        assert got.last_logprobs.tobytes() == want.last_logprobs.tobytes()


async def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_round_trip_is_bitwise_through_a_fresh_store(redis_server):
    writer = await open_store(redis_server.url)
    want = [make_snapshot("s1", seed=1), make_snapshot("s2", seed=2, logprobs=False, parts=1)]
    for snapshot in want:
        writer.save(snapshot)
    assert await writer.flush(5.0)
    await writer.close()
    reader = await open_store(redis_server.url)  # nothing pending: every byte comes from Redis
    try:
        for snapshot in want:
            assert_bitwise(await reader.load(N(snapshot.session_id)), snapshot)
        assert await reader.load(N("never-saved")) is None
        assert reader.counts["hit"] == 2 and reader.counts["miss"] == 1
        loaded = (await reader.load(N("s1"))).state[0]
        loaded[0, 0] = 1.0  # the loaded arrays are the caller's own (writable copies)
    finally:
        await reader.close()


async def test_key_expires_with_the_session_ttl(redis_server):
    store = await open_store(redis_server.url)
    try:
        store.save(make_snapshot("long", ttl=30.0))
        store.save(make_snapshot("short", ttl=0.3))
        assert await store.flush(5.0)
        pttl = int(redis_server.command("PTTL", KEY_PREFIX + "alice/long")[1:].split(b"\r\n")[0])
        assert 0 < pttl <= 30_000
        await asyncio.sleep(0.6)
        assert await store.load(N("short")) is None  # Redis forgot it with the session's TTL
        assert await store.load(N("long")) is not None
    finally:
        await store.close()


async def test_delete_removes_the_key_and_a_pending_write_is_read_back(redis_server):
    store = await open_store(redis_server.url)
    try:
        snapshot = make_snapshot("d1")
        store.save(snapshot)
        assert_bitwise(await store.load(N("d1")), snapshot)  # read-your-writes before the flush
        assert await store.flush(5.0)
        store.delete(N("d1"))
        assert await store.load(N("d1")) is None  # the pending delete already hides it
        assert await store.flush(5.0)
        assert redis_server.command("EXISTS", KEY_PREFIX + "alice/d1") == b":0\r\n"
    finally:
        await store.close()


async def test_redis_killed_mid_run_then_restarted(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="service.snapshots")
    store = await open_store(redis_server.url)
    try:
        store.save(make_snapshot("before"))
        assert await store.flush(5.0)
        redis_server.stop()
        assert await asyncio.wait_for(store.load(N("before")), HANG_GUARD) is None  # no raise, no stall
        assert not store.healthy and "unreachable" in store.detail
        for i in range(5):
            store.save(make_snapshot("during", steps=10 + i))  # returns at once; the newest is kept
            assert await asyncio.wait_for(store.load(N("other")), HANG_GUARD) is None
        assert not await store.flush(0.5)  # cannot drain while Redis is down
        assert store.pending == 1 and store.counts["superseded"] == 4
        downs = [r for r in caplog.records if getattr(r, "event", "") == "state_store_down"]
        assert len(downs) == 1  # one log line per outage, not per failed call
        redis_server.start()
        await wait_until(lambda: store.healthy)
        assert await store.flush(5.0)
        assert (await store.load(N("before"))) is None  # the old Redis kept nothing (no persistence)
        reader = await open_store(redis_server.url)
        try:
            assert (await reader.load(N("during"))).steps == 14  # the write queued in the outage landed
        finally:
            await reader.close()
    finally:
        await store.close()


async def test_hung_redis_does_not_stall_a_load(redis_server):
    store = await open_store(redis_server.url)
    try:
        redis_server.pause()  # accepts connections, answers nothing
        assert await asyncio.wait_for(store.load(N("x")), HANG_GUARD) is None
        assert not store.healthy
        assert await asyncio.wait_for(store.load(N("x")), HANG_GUARD) is None  # fast path while down
        redis_server.resume()
        await wait_until(lambda: store.healthy)
        store.save(make_snapshot("after"))
        assert await store.flush(5.0)
        assert (await store.load(N("after"))) is not None
    finally:
        redis_server.resume()
        await store.close()


async def test_queue_bound_holds_and_keeps_deletes_over_saves(tmp_path):
    down = RedisServer(tmp_path / "never-started")  # nothing listens on its port
    store = await open_store(down.url)
    store.max_pending = 4
    try:
        assert not store.healthy  # started anyway
        for i in range(20):
            store.save(make_snapshot(f"s{i}"))
        assert store.pending == 4 and store.counts["dropped"] == 16
        assert [key.rpartition("/")[2] for key in store._pending] == ["s16", "s17", "s18", "s19"]  # the newest win
        store.delete(N("s17"))
        store.delete(N("s18"))
        store.save(make_snapshot("n1"))
        store.save(make_snapshot("n2"))
        # over the bound, the oldest *saves* go first: a lost delete could bring a deleted session back
        assert [key.rpartition("/")[2] for key in store._pending] == ["s17", "s18", "n1", "n2"]
        assert await store.load(N("s17")) is None and (await store.load(N("n2"))).session_id == "n2"
        down.start()
        await wait_until(lambda: store.healthy)
        assert await store.flush(5.0)
        assert down.command("EXISTS", KEY_PREFIX + "alice/n1") == b":1\r\n"
    finally:
        await store.close()
        down.stop()


async def test_redis_down_at_start_reconnects_in_the_background(tmp_path):
    server = RedisServer(tmp_path / "late")
    store = await open_store(server.url)
    try:
        assert not store.healthy
        store.save(make_snapshot("early"))
        server.start()
        await wait_until(lambda: store.healthy)
        assert await store.flush(5.0)
        assert server.command("EXISTS", KEY_PREFIX + "alice/early") == b":1\r\n"
    finally:
        await store.close()
        server.stop()


async def test_unreadable_value_is_treated_as_absent(redis_server):
    store = await open_store(redis_server.url)
    try:
        redis_server.command("SET", KEY_PREFIX + "alice/junk", "not a snapshot")
        store.save(make_snapshot("elsewhere"))
        assert await store.flush(5.0)
        redis_server.command("RENAME", KEY_PREFIX + "alice/elsewhere", KEY_PREFIX + "alice/renamed")
        assert await store.load(N("junk")) is None
        assert await store.load(N("renamed")) is None  # a value naming another session is not this one
        assert store.counts["corrupt"] == 2 and store.healthy
    finally:
        await store.close()


async def test_writes_redis_refuses_are_failures_not_an_outage(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="service.snapshots")
    store = await open_store(redis_server.url)
    try:
        assert redis_server.command("CONFIG", "SET", "maxmemory", "1") == b"+OK\r\n"  # OOM for every write
        store.save(make_snapshot("refused"))
        assert await store.flush(5.0)  # drained: a refused write is not retried forever
        assert store.counts["failed"] == 1 and store.healthy
        assert [r.event for r in caplog.records if hasattr(r, "event")] == ["snapshot_write_refused"]
        redis_server.command("CONFIG", "SET", "maxmemory", "0")
        store.save(make_snapshot("accepted"))
        assert await store.flush(5.0)
        assert (await store.load(N("accepted"))) is not None and await store.load(N("refused")) is None
    finally:
        await store.close()


async def test_metrics_follow_the_store(redis_server):
    metrics = Metrics()
    store = await open_store(redis_server.url, metrics)
    try:
        store.save(make_snapshot("m1"))
        assert await store.flush(5.0)
        redis_server.stop()
        await store.load(N("m2"))
        text = generate_latest(metrics.registry).decode()
        assert "lstm_state_store_up 0.0" in text
        assert 'lstm_snapshot_writes_total{result="written"} 1.0' in text
        assert "lstm_state_store_outages_total 1.0" in text
        assert 'lstm_snapshot_loads_total{result="unavailable"} 1.0' in text
    finally:
        await store.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "127.0.0.1:6379", "redis://:6379/0",
                                 "redis://host:port/0", "redis://127.0.0.1:6379/zero", "memory://"])
def test_only_redis_urls_are_accepted(url):
    with pytest.raises(ConfigError, match="redis://host:port/db"):
        check_url(url)


def test_a_password_never_appears_in_the_message():
    with pytest.raises(ConfigError) as err:
        check_url(f"redis://user:s3cret@127.0.0.1:{free_port()}/x")
    assert "s3cret" not in str(err.value)
