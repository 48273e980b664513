"""Durability end to end: real ``python -m lstm_service`` processes with
``--state-store`` on a real redis-server. Restart the whole service (kill -9
and graceful) and sessions go on from their snapshots, bitwise equal to a
replay; stop Redis mid-run and the service keeps serving; export a session
from one server and import it into another: it goes on bitwise; forged,
foreign-key and other-model blobs are refused and create nothing."""
from __future__ import annotations

import grpc
import pytest

from durable_helpers import (Driver, Service, assert_same_step, chunks_of, policy_steps, snapshot_steps,
                             wait_for)
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from redis_helpers import NEEDS_REDIS, RedisServer, running_redis

pytestmark = NEEDS_REDIS
TEXT = (b"O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name; "
        b"or, if thou wilt not, be but sworn my love, and I'll no longer be a Capulet. ")
SIZES = [3, 1, 5, 2, 4, 1, 1, 6, 2, 3]  # 28 tokens in 10 calls
EVERY = 8


@pytest.fixture
def redis_server(tmp_path):
    yield from running_redis(tmp_path)


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "session.key"
    path.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    return path


def durable(tiny_model_dir, tmp_path, redis_server, name="durable", idle=600.0, extra=()):
    return Service(tiny_model_dir, tmp_path, name, ["--state-store", redis_server.url, "--snapshot-every", str(EVERY),
                                                    "--snapshot-idle-seconds", str(idle), *extra])


def sid(name: str) -> str:
    """A valid session id (16+ characters) that reads as ``name``."""
    return f"{name}-0123456789abcdef"


def feed(driver: Driver, sid: str, chunks):
    steps = [driver.create(sid, chunks[0])]
    steps += [driver.step(sid, chunk) for chunk in chunks[1:]]
    return steps


def test_kill9_and_restart_resumes_each_session_from_its_snapshot(tiny_model_dir, tmp_path, redis_server):
    service = durable(tiny_model_dir, tmp_path, redis_server).start()
    chunks = chunks_of(TEXT, SIZES + [2])
    fed, nxt = chunks[:-1], chunks[-1]
    saved = policy_steps(SIZES, EVERY)
    assert 0 < saved < sum(SIZES)  # the kill loses some steps: the window is real
    driver = Driver(service.target)
    try:
        feed(driver, sid("victim"), fed)
        wait_for(lambda: snapshot_steps(redis_server, sid("victim")) == saved, 10,
                 f"no snapshot at step {saved} in Redis")
        driver.close()
        service.kill9()
        service.start()
        driver = Driver(service.target)
        # the client learns where the snapshot stands, and resends from there
        with pytest.raises(grpc.RpcError) as err:
            driver.step(sid("victim"), nxt, expected_steps=sum(SIZES))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"consumed {saved} tokens" in err.value.details()
        boundary = next(i for i in range(len(SIZES) + 1) if sum(SIZES[:i]) == saved)
        resent = fed[boundary:] + [nxt]
        got = [driver.step(sid("victim"), chunk) for chunk in resent]
        want = driver.replay(fed[:boundary] + resent)[boundary:]
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_step(g, w, f"resent call {i}")
    finally:
        driver.close()
        service.stop()


def test_graceful_restart_loses_nothing(tiny_model_dir, tmp_path, redis_server):
    service = durable(tiny_model_dir, tmp_path, redis_server).start()
    chunks = chunks_of(TEXT, SIZES + [2, 3])
    driver = Driver(service.target)
    try:
        for i in range(3):
            feed(driver, sid(f"s{i}"), chunks[:len(SIZES) - i])
        driver.close()
        assert service.stop() == 0  # SIGTERM: the drain snapshots every unsaved session
        service.start()
        driver = Driver(service.target)
        for i in range(3):
            fed = chunks[:len(SIZES) - i]
            got = driver.step(sid(f"s{i}"), chunks[-1], expected_steps=sum(map(len, fed)))
            assert_same_step(got, driver.replay(fed + [chunks[-1]])[-1], f"session s{i}")
    finally:
        driver.close()
        service.stop()


def test_idle_sessions_are_snapshotted_and_deleted_ones_stay_deleted(tiny_model_dir, tmp_path, redis_server):
    service = durable(tiny_model_dir, tmp_path, redis_server, idle=0.3).start()
    chunks = chunks_of(TEXT, [3, 2])
    driver = Driver(service.target)
    try:
        feed(driver, sid("idle"), chunks)
        feed(driver, sid("gone"), chunks)
        wait_for(lambda: snapshot_steps(redis_server, sid("idle")) == 5, 10, "the idle session was not snapshotted")
        wait_for(lambda: snapshot_steps(redis_server, sid("gone")) == 5, 10, "the idle session was not snapshotted")
        driver.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid("gone")), timeout=10)
        wait_for(lambda: snapshot_steps(redis_server, sid("gone")) is None, 10, "a deleted session's snapshot stayed")
        driver.close()
        service.kill9()
        service.start()
        driver = Driver(service.target)
        assert driver.step(sid("idle"), [65], expected_steps=5)[0] == 6
        with pytest.raises(grpc.RpcError) as err:
            driver.step(sid("gone"), [65])
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        driver.close()
        service.stop()


def store_health(target: str) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="lstm.v1.SnapshotStore"))
        return reply.status


def test_redis_stopped_mid_run_the_service_keeps_serving(tiny_model_dir, tmp_path, redis_server):
    from grpc_health.v1 import health_pb2

    service = durable(tiny_model_dir, tmp_path, redis_server, extra=["--reap-interval", "0.2"]).start()
    chunks = chunks_of(TEXT, SIZES)
    driver = Driver(service.target)
    try:
        got = feed(driver, sid("live"), chunks[:4])
        redis_server.stop()
        got += [driver.step(sid("live"), chunk) for chunk in chunks[4:]]  # past a snapshot point: queued, not awaited
        with pytest.raises(grpc.RpcError) as err:  # a session nobody holds: NOT_FOUND, not a stall
            driver.step(sid("held-nowhere"), [65])
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        feed(driver, sid("created-while-down"), chunks[:2])
        for i, (g, w) in enumerate(zip(got, driver.replay(chunks))):
            assert_same_step(g, w, f"call {i}")
        assert service.metric("lstm_state_store_up") == 0.0
        wait_for(lambda: store_health(service.target) == health_pb2.HealthCheckResponse.NOT_SERVING, 5,
                 "the store's health service never said NOT_SERVING")
        redis_server.start()  # the same port, empty (no persistence)
        wait_for(lambda: service.metric("lstm_state_store_up") == 1.0, 15, "the store never came back")
        wait_for(lambda: store_health(service.target) == health_pb2.HealthCheckResponse.SERVING, 5,
                 "the store's health service never came back to SERVING")
        wait_for(lambda: snapshot_steps(redis_server, sid("live")) == policy_steps(SIZES, EVERY), 15,
                 "the snapshot queued during the outage never reached Redis")
    finally:
        driver.close()
        service.stop()


def test_the_service_starts_with_redis_down_and_connects_when_it_comes(tiny_model_dir, tmp_path):
    late = RedisServer(tmp_path / "late-redis")  # its port is chosen; nothing listens there yet
    service = Service(tiny_model_dir, tmp_path, "early", ["--state-store", late.url, "--snapshot-every", "2"]).start()
    driver = Driver(service.target)
    try:
        assert service.metric("lstm_state_store_up") == 0.0
        feed(driver, sid("early"), chunks_of(TEXT, [2, 2]))  # serves from memory meanwhile
        late.start()
        wait_for(lambda: service.metric("lstm_state_store_up") == 1.0, 15, "the store never connected")
        wait_for(lambda: snapshot_steps(late, sid("early")) == 4, 15, "the queued snapshot never reached Redis")
    finally:
        driver.close()
        service.stop()
        late.stop()


def test_export_from_one_server_import_into_another(tiny_model_dir, tmp_path, key_file):
    args = ["--session-key-file", str(key_file)]
    source = Service(tiny_model_dir, tmp_path, "source", args).launch()
    target = Service(tiny_model_dir, tmp_path, "target", args).launch()
    source.wait_serving(), target.wait_serving()
    chunks = chunks_of(TEXT, SIZES + [4])
    a, b = Driver(source.target), Driver(target.target)
    try:
        feed(a, sid("moving"), chunks[:-1])
        exported = a.stub.ExportSession(pb.ExportSessionRequest(session_id=sid("moving")), timeout=10)
        assert exported.steps == sum(SIZES)
        imported = b.stub.ImportSession(pb.ImportSessionRequest(blob=exported.blob, session_id=sid("moved")), timeout=10)
        assert imported.session.steps == sum(SIZES)
        # the same next call on the original and on the import: the very same answer
        assert_same_step(b.step(sid("moved"), chunks[-1]), a.step(sid("moving"), chunks[-1]), "imported session")
        assert sid("moved") not in a.session_ids()
    finally:
        a.close(), b.close()
        source.stop(), target.stop()


def test_forged_foreign_key_and_other_model_blobs_are_refused(make_tiny_model, tiny_model_dir, tmp_path, key_file):
    other_key = tmp_path / "other.key"
    other_key.write_bytes(b"another key, also 32 bytes long!")
    home = Service(tiny_model_dir, tmp_path, "home", ["--session-key-file", str(key_file)]).launch()
    stranger = Service(tiny_model_dir, tmp_path, "stranger", ["--session-key-file", str(other_key)]).launch()
    gru = Service(make_tiny_model("gru"), tmp_path, "gru", ["--session-key-file", str(key_file)]).launch()
    servers = [home, stranger, gru]
    drivers = [Driver(s.wait_serving().target) for s in servers]
    try:
        d, d_stranger, d_gru = drivers
        feed(d, sid("orig"), chunks_of(TEXT, [5, 3]))
        blob = d.stub.ExportSession(pb.ExportSessionRequest(session_id=sid("orig")), timeout=10).blob
        forged = bytearray(blob)
        forged[len(forged) // 2] ^= 0x40
        cases = [(d, bytes(forged), grpc.StatusCode.INVALID_ARGUMENT),
                 (d, blob[:-1], grpc.StatusCode.INVALID_ARGUMENT),
                 (d, b"", grpc.StatusCode.INVALID_ARGUMENT),
                 (d_stranger, blob, grpc.StatusCode.INVALID_ARGUMENT),
                 (d_gru, blob, grpc.StatusCode.FAILED_PRECONDITION)]
        for i, (driver, data, code) in enumerate(cases):
            before = driver.session_ids()
            with pytest.raises(grpc.RpcError) as err:
                driver.stub.ImportSession(pb.ImportSessionRequest(blob=data, session_id=sid(f"imp{i}")), timeout=10)
            assert err.value.code() == code, f"case {i}: {err.value.code()} {err.value.details()}"
            assert driver.session_ids() == before, f"case {i}: a refused import created a session"
        ok = d.stub.ImportSession(pb.ImportSessionRequest(blob=blob), timeout=10)  # the genuine blob works
        assert ok.session.steps == 8 and ok.session.id != sid("orig")
    finally:
        for driver in drivers:
            driver.close()
        for server in servers:
            server.stop()
