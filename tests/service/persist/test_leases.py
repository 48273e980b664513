"""Session leases across replicas (service/persist/leases.py) with real replicas
(``python -m lstm_service`` processes) on one real redis-server: a lease is taken,
renewed and expires with its replica's heartbeat; a replica paused with SIGSTOP whose
lease moved cannot commit after SIGCONT; a replica killed -9 has its sessions taken up by
another at their last acknowledged step (write-through); a drain releases every lease.
Every continuation is checked bitwise against a replay of the same steps."""
from __future__ import annotations

import signal
import time

import grpc
import pytest

from redis.asyncio import Redis

from lstm_service.service.core.session_ids import SessionName
from lstm_service.service.persist.leases import Leases, lease_key
from lstm_service.service.persist.snapshots import key_of
from durable_helpers import Driver, FULL, assert_same_step, chunks_of, snapshot_steps, wait_for
from lease_helpers import heartbeat_ttl_ms, lease_of, pause_tree, reason_of, replica
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from redis_helpers import NEEDS_REDIS, running_redis

pytestmark = NEEDS_REDIS
TEXT = (b"O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name; "
        b"or, if thou wilt not, be but sworn my love, and I'll no longer be a Capulet. ")
SIZES = [3, 1, 5, 2, 4, 1, 1, 6, 2, 3]


@pytest.fixture
def redis_server(tmp_path):
    yield from running_redis(tmp_path)


def sid(name: str) -> str:
    return f"{name}-0123456789abcdef"


async def test_the_scripts_fence_stale_writes_and_a_deleted_session_stays_deleted(redis_server):
    """The lease scripts themselves on a real Redis, two replicas' Leases on one client."""
    redis = Redis.from_url(redis_server.url)
    try:
        a, b = Leases(redis, "ra"), Leases(redis, "rb")
        await a.beat()
        await b.beat()
        name = SessionName("anonymous", sid("fenced"))
        keys = [lease_key(name), key_of(name)]
        write = a.script("write")
        assert (await a.claim(name, key_of(name), 60000)).epoch == 1
        assert await write(keys=keys, args=["ra", 1, 1, b"v1", 60000]) == 1
        assert await write(keys=keys, args=["ra", 1, 1, b"older", 60000]) == 2  # same seq: stale, skipped
        assert (await b.acquire(name, key_of(name), "no-old-key")).kind == "held"  # a is alive
        await redis.delete(a.heartbeat_key)  # as after a's TTL ran out (a paused)
        taken = await b.acquire(name, key_of(name), "no-old-key")
        assert (taken.kind, taken.epoch, taken.snapshot) == ("took", 2, b"v1")  # the snapshot, same script
        assert await write(keys=keys, args=["ra", 1, 2, b"late", 60000]) == 0  # a's write: fenced
        assert await redis.get(key_of(name)) == b"v1"
        assert await a.verify(name, 1) == (False, a.incarnation)
        assert await b.script("delete")(keys=keys, args=["rb", 2]) == 1
        assert await write(keys=keys, args=["ra", 1, 3, b"zombie", 60000]) == 0  # cannot bring it back
        assert await redis.get(key_of(name)) is None
        assert (await a.acquire(name, key_of(name), "no-old-key")).kind == "none"
    finally:
        await redis.aclose()


def test_a_lease_is_taken_renewed_and_expires_with_its_replica(tiny_model_dir, tmp_path, redis_server):
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra", extra=["--lease-ms", "300"]).start()
    driver = Driver(a.target)
    try:
        driver.create(sid("leased"), [65, 66])
        lease = lease_of(redis_server, sid("leased"))
        assert lease["owner"] == "ra" and int(lease["epoch"]) >= 1
        assert 0 < heartbeat_ttl_ms(redis_server, "ra") <= 300
        time.sleep(0.9)  # three TTLs: still there, so it was renewed
        assert 0 < heartbeat_ttl_ms(redis_server, "ra") <= 300
        driver.step(sid("leased"), [67])
        assert lease_of(redis_server, sid("leased"))["epoch"] == lease["epoch"]  # held, not taken again
        a.kill9()
        wait_for(lambda: heartbeat_ttl_ms(redis_server, "ra") == -2, 2, "the heartbeat outlived its replica")
        assert lease_of(redis_server, sid("leased"))["owner"] == "ra"  # taken over only when asked
    finally:
        driver.close()
        a.stop()


def test_a_paused_replica_whose_lease_moved_cannot_commit(tiny_model_dir, tmp_path, redis_server):
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra", every=1).start()
    b = replica(tiny_model_dir, tmp_path, redis_server, "rb", every=1).start()
    chunks = chunks_of(TEXT, SIZES)
    da, db = Driver(a.target), Driver(b.target)
    requests: list = []
    wake = __import__("threading").Event()

    def feed():
        yield pb.StreamRequest(open=pb.OpenStream(session_id=sid("paused"), create=True, end_with_stream=False))
        for request in requests:
            yield request
        while not wake.wait(0.05):
            pass
        yield pb.StreamRequest(step=pb.StreamStep(input=pb.Input(tokens=chunks[5]), output=FULL))

    try:
        for chunk in chunks[:3]:
            requests.append(pb.StreamRequest(step=pb.StreamStep(input=pb.Input(tokens=chunk), output=FULL)))
        stream = da.stub.Stream(feed(), timeout=60)
        replies = [next(stream) for _ in range(4)]  # opened + 3 results, each acknowledged
        assert replies[-1].result.steps == sum(SIZES[:3])
        pause_tree(a, signal.SIGSTOP)
        try:  # a paused owner does not answer; its heartbeat runs out and b takes the session
            got = db.step(sid("paused"), chunks[3])
            assert lease_of(redis_server, sid("paused"))["owner"] == "rb"
        finally:
            pause_tree(a, signal.SIGCONT)
        wake.set()
        with pytest.raises(grpc.RpcError) as err:  # a's stream step after SIGCONT: its lease moved
            next(stream)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert reason_of(err.value) == "LEASE_MOVED"
        got2 = db.step(sid("paused"), chunks[4])  # b's copy is unaffected by a's attempt
        want = db.replay(chunks[:5])
        assert_same_step(got, want[3], "b's first step")
        assert_same_step(got2, want[4], "b's second step")
        assert snapshot_steps(redis_server, sid("paused")) == sum(SIZES[:5])
    finally:
        wake.set()
        da.close()
        db.close()
        a.stop()
        b.stop()


def test_a_killed_replicas_session_resumes_elsewhere_at_its_last_acknowledged_step(tiny_model_dir, tmp_path,
                                                                                   redis_server):
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra", every=1).start()
    b = replica(tiny_model_dir, tmp_path, redis_server, "rb", every=1).start()
    chunks = chunks_of(TEXT, SIZES)
    da, db = Driver(a.target), Driver(b.target)
    try:
        fed = [da.create(sid("killed"), chunks[0])] + [da.step(sid("killed"), c) for c in chunks[1:6]]
        a.kill9()  # right after the last acknowledged step: write-through put it in Redis already
        began = time.monotonic()
        got = db.step(sid("killed"), chunks[6])
        took = time.monotonic() - began
        print(f"takeover after kill -9: {took * 1000:.0f} ms (lease 400 ms)")
        want = db.replay(chunks[:7])
        for i, (g, w) in enumerate(zip(fed + [got], want)):
            assert_same_step(g, w, f"call {i}")
        assert lease_of(redis_server, sid("killed"))["owner"] == "rb"
    finally:
        da.close()
        db.close()
        a.stop()
        b.stop()


def test_a_drain_writes_every_session_and_releases_its_lease(tiny_model_dir, tmp_path, redis_server):
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra", extra=["--lease-ms", "10000"]).start()
    b = replica(tiny_model_dir, tmp_path, redis_server, "rb").start()
    chunks = chunks_of(TEXT, SIZES)
    da, db = Driver(a.target), Driver(b.target)
    try:
        fed = [da.create(sid("drained"), chunks[0])] + [da.step(sid("drained"), c) for c in chunks[1:4]]
        assert snapshot_steps(redis_server, sid("drained")) is None  # every 64: nothing written yet
        assert a.stop() == 0
        assert lease_of(redis_server, sid("drained")) == {}  # released, not left to a 10 s heartbeat
        assert snapshot_steps(redis_server, sid("drained")) == sum(SIZES[:4])
        assert heartbeat_ttl_ms(redis_server, "ra") == -2
        got = db.step(sid("drained"), chunks[4])
        want = db.replay(chunks[:5])
        for i, (g, w) in enumerate(zip(fed + [got], want)):
            assert_same_step(g, w, f"call {i}")
    finally:
        da.close()
        db.close()
        a.stop()
        b.stop()


def test_write_through_generated_tokens_survive_a_kill(tiny_model_dir, tmp_path, redis_server):
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra", every=1).start()
    b = replica(tiny_model_dir, tmp_path, redis_server, "rb", every=1).start()
    da, db = Driver(a.target), Driver(b.target)
    try:
        da.create(sid("generated"), [65, 66, 67])
        tokens = [g.token for g in da.stub.Generate(pb.GenerateRequest(
            session_id=sid("generated"), sampling=pb.SamplingParams(max_tokens=5, seed=1)), timeout=20)]
        assert len(tokens) == 5
        a.kill9()  # every token handed out was in Redis before it was
        assert db.step(sid("generated"), [68])[0] == 3 + 5 + 1
    finally:
        da.close()
        db.close()
        a.stop()
        b.stop()


def test_write_through_a_call_that_ends_non_ok_after_its_write_leaves_the_committed_state(tiny_model_dir, tmp_path,
                                                                                           redis_server):
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra", every=1).start()
    b = replica(tiny_model_dir, tmp_path, redis_server, "rb", every=1).start()
    chunks = chunks_of(TEXT, SIZES)
    da, db = Driver(a.target), Driver(b.target)
    try:
        fed = [da.create(sid("cut"), chunks[0]), da.step(sid("cut"), chunks[1])]
        redis_server.pause()  # the next step's write waits for Redis, past the call's deadline
        resume = __import__("threading").Timer(0.8, redis_server.resume)
        resume.start()
        with pytest.raises(grpc.RpcError) as err:
            da.stub.Predict(pb.PredictRequest(session_id=sid("cut"), input=pb.Input(tokens=chunks[2]), output=FULL),
                            timeout=0.3)
        assert err.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
        resume.join()
        committed = sum(SIZES[:2])
        # the write may have landed; the release wrote the committed state back over it
        wait_for(lambda: snapshot_steps(redis_server, sid("cut")) == committed, 10,
                 "Redis kept the step of a call that ended non-OK")
        time.sleep(0.5)
        assert snapshot_steps(redis_server, sid("cut")) == committed  # and it stays so
        a.kill9()
        got = db.step(sid("cut"), chunks[2])
        want = db.replay(chunks[:3])
        for i, (g, w) in enumerate(zip(fed + [got], want)):
            assert_same_step(g, w, f"call {i}")
    finally:
        redis_server.resume()
        da.close()
        db.close()
        a.stop()
        b.stop()
