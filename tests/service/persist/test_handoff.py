"""Handoff between live replicas (service/persist/handoff.py): two real replicas on one
real redis-server, a session's calls alternating between them with the default snapshot
policy (nothing in Redis when the other replica is asked): every call is found (0
NOT_FOUND), the owner hands the session over, and every step is bitwise what one replica's
replay gives. A session busy on its owner (an open stream) is ABORTED elsewhere, as it is
on one replica."""
from __future__ import annotations

import grpc
import pytest

from durable_helpers import Driver, FULL, assert_same_step, chunks_of, snapshot_steps
from lease_helpers import lease_of, reason_of, replica
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from redis_helpers import NEEDS_REDIS, running_redis

pytestmark = NEEDS_REDIS
TEXT = (b"But, soft! what light through yonder window breaks? It is the east, and Juliet is the sun. "
        b"Arise, fair sun, and kill the envious moon, who is already sick and pale with grief. ")
SIZES = [4, 1, 3, 2, 5, 1, 2, 1, 6, 3, 2, 2]


@pytest.fixture
def redis_server(tmp_path):
    yield from running_redis(tmp_path)


def test_calls_alternating_between_two_replicas_find_the_session_and_match_a_replay(tiny_model_dir, tmp_path,
                                                                                    redis_server):
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra").start()
    b = replica(tiny_model_dir, tmp_path, redis_server, "rb").start()
    chunks = chunks_of(TEXT, SIZES)
    drivers = [Driver(a.target), Driver(b.target)]
    session = "alternating-0123456789"
    try:
        got = [drivers[0].create(session, chunks[0])]
        assert snapshot_steps(redis_server, session) is None  # only the owner holds it: a handoff is needed
        for i, chunk in enumerate(chunks[1:], 1):
            got.append(drivers[i % 2].step(session, chunk))  # b, a, b, ...: every call moves it
            assert lease_of(redis_server, session)["owner"] == ("rb" if i % 2 else "ra")
        assert int(lease_of(redis_server, session)["epoch"]) >= len(SIZES)
        want = drivers[0].replay(chunks)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_step(g, w, f"call {i}")
        # the session's record reads the same on either replica (each asks the other)
        infos = [d.stub.GetSession(pb.GetSessionRequest(session_id=session), timeout=20) for d in drivers]
        assert [info.session.steps for info in infos] == [sum(SIZES)] * 2
    finally:
        for d in drivers:
            d.close()
        a.stop()
        b.stop()


def test_a_session_held_by_a_stream_on_its_owner_is_busy_on_another_replica(tiny_model_dir, tmp_path, redis_server):
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra").start()
    b = replica(tiny_model_dir, tmp_path, redis_server, "rb").start()
    da, db = Driver(a.target), Driver(b.target)
    session = "streamed-0123456789abc"
    import threading

    done = threading.Event()

    def requests():
        yield pb.StreamRequest(open=pb.OpenStream(session_id=session, create=True, end_with_stream=False))
        yield pb.StreamRequest(step=pb.StreamStep(input=pb.Input(tokens=[70, 71]), output=FULL))
        done.wait(30)

    try:
        stream = da.stub.Stream(requests(), timeout=60)
        next(stream), next(stream)  # opened, one step committed: the stream holds the session
        with pytest.raises(grpc.RpcError) as err:
            db.step(session, [72])
        assert err.value.code() == grpc.StatusCode.ABORTED, err.value.details()
        assert reason_of(err.value) == "SESSION_BUSY"
        assert lease_of(redis_server, session)["owner"] == "ra"  # nothing moved
        done.set()
        for _ in stream:
            pass
        assert db.step(session, [72])[0] == 3  # free now: handed over, steps intact
    finally:
        done.set()
        da.close()
        db.close()
        a.stop()
        b.stop()


def test_a_fork_or_a_session_made_on_one_replica_is_found_on_the_other_before_any_snapshot(
        tiny_model_dir, tmp_path, redis_server):
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra").start()
    b = replica(tiny_model_dir, tmp_path, redis_server, "rb").start()
    chunks = chunks_of(TEXT, SIZES)
    da, db = Driver(a.target), Driver(b.target)
    source = "forked-source-0123456789"
    try:
        da.create(source, chunks[0])
        fork = da.stub.ForkSession(pb.ForkSessionRequest(session_id=source), timeout=20).session.id
        assert snapshot_steps(redis_server, fork) is None and lease_of(redis_server, fork)["owner"] == "ra"
        got = [db.step(fork, chunks[1]), db.step(source, chunks[1])]  # each handed over by a
        want = db.replay(chunks[:2])[1]
        assert_same_step(got[0], want, "the fork's step on b")
        assert_same_step(got[1], want, "the source's step on b")
    finally:
        da.close()
        db.close()
        a.stop()
        b.stop()


def test_a_sequence_held_by_a_kserve_stream_is_handed_over_between_its_requests_and_back(
        tiny_model_dir, tmp_path, redis_server, reference):
    """Better than an lstm.v1 stream's hold (busy above): a KServe stream keeps its sequence's
    session held between requests (service/edge/kserve/held.py) but gives it up when another
    replica asks, and takes it back at its next request; every answer is the one-run replay's."""
    import queue

    import numpy as np
    tc = pytest.importorskip("tritonclient.grpc")  # the [dev] extra
    from lstm_service.model.card import load_card
    from lstm_service.service.edge.kserve.sequence import session_id_for

    def steps_of(result) -> int:
        return result.get_response().parameters["sequence_steps"].int64_param

    tokens = list(TEXT[:6])
    want = reference.logprobs(tokens)
    a = replica(tiny_model_dir, tmp_path, redis_server, "ra").start()
    b = replica(tiny_model_dir, tmp_path, redis_server, "rb").start()
    ca, cb = tc.InferenceServerClient(a.target), tc.InferenceServerClient(b.target)
    name = load_card(tiny_model_dir).name

    def ids(part):
        x = tc.InferInput("INPUT_IDS", [1, len(part)], "INT64")
        x.set_data_from_numpy(np.asarray(part, dtype=np.int64)[None, :])
        return x

    answers: queue.Queue = queue.Queue()
    out = [tc.InferRequestedOutput("LOGPROBS")]
    try:
        ca.start_stream(callback=lambda result, error: answers.put((result, error)))

        def on_a(part, **kw):
            ca.async_stream_infer(name, [ids(part)], sequence_id=5, outputs=out, **kw)
            result, error = answers.get(timeout=30)
            assert error is None, error
            return result

        assert steps_of(on_a(tokens[:2], sequence_start=True)) == 2
        assert steps_of(on_a(tokens[2:3])) == 3  # the stream on ra holds the session now
        got = cb.infer(name, [ids(tokens[3:5])], sequence_id=5, outputs=out)  # handed over to rb
        assert steps_of(got) == 5
        assert lease_of(redis_server, session_id_for(5))["owner"] == "rb"
        last = on_a(tokens[5:6])  # and back to ra, for the stream's next request
        assert steps_of(last) == 6
        assert lease_of(redis_server, session_id_for(5))["owner"] == "ra"
        assert np.abs(last.as_numpy("LOGPROBS")[0, -1] - want[-1]).max() <= 1e-4
    finally:
        ca.stop_stream()
        ca.close()
        cb.close()
        a.stop()
        b.stop()
