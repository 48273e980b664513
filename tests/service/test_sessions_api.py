"""Session lifecycle over gRPC: create, fork, reset, delete, TTL expiry with
an injected clock, LRU eviction, one writer at a time, x-session-id."""
import asyncio

import grpc
import numpy as np
import pytest

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.core.sessions import SessionStore
from svc_helpers import same_state, FakeClock, open_stream, serving, stream_step

TOL = 1e-4


async def expect(code, awaitable, *fragments):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details()
    return info.value


def logprobs_of(response):
    return np.array(response.result.predictions[-1].logprobs)


async def predict(stub, sid, text, **kw):
    return await stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text=text),
                                                output=pb.OutputOptions(logprobs=True)), **kw)


async def test_create_with_prompt_prefills_in_one_call(tiny_model_dir, reference):
    async with serving(tiny_model_dir) as s:
        calls = s.engine.runner.stats.batches
        created = await s.stub.CreateSession(pb.CreateSessionRequest(
            prompt=pb.Input(text="ROMEO: hello"), output=pb.OutputOptions(logprobs=True, all_positions=True)))
        assert s.engine.runner.stats.batches == calls + 1  # T>1 prefill is one model call
        assert created.session.steps == 12 and created.result.steps == 12
        rows = np.array([p.logprobs for p in created.result.predictions])
        assert np.abs(rows - reference.logprobs(list(b"ROMEO: hello"))).max() <= TOL
        assert len(created.session.id) >= 22  # 128 random bits, url-safe
        got = await s.stub.GetSession(pb.GetSessionRequest(session_id=created.session.id))
        assert got.session.steps == 12 and got.session.ttl_seconds == 600 and not got.session.busy


async def test_client_chosen_id_and_header(tiny_model_dir):
    sid = "client-chosen_id-0001"
    async with serving(tiny_model_dir) as s:
        await s.stub.CreateSession(pb.CreateSessionRequest(session_id=sid, ttl_seconds=30))
        # The x-session-id metadata only routes: the body names the session.
        got = await s.stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=(("x-session-id", sid),))
        assert got.session.id == sid and got.session.ttl_seconds == 30
        await expect(grpc.StatusCode.INVALID_ARGUMENT,
                     s.stub.GetSession(pb.GetSessionRequest(), metadata=(("x-session-id", sid),)), "required")
        # A stateless Predict stays stateless whatever the metadata says.
        stateless = await s.stub.Predict(pb.PredictRequest(input=pb.Input(text="ab")), metadata=(("x-session-id", sid),))
        assert stateless.result.session_id == "" and (await s.stub.GetSession(
            pb.GetSessionRequest(session_id=sid))).session.steps == 0
        await expect(grpc.StatusCode.ALREADY_EXISTS, s.stub.CreateSession(pb.CreateSessionRequest(session_id=sid)),
                     sid, "already exists")
        await expect(grpc.StatusCode.INVALID_ARGUMENT,
                     s.stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=(("x-session-id", "x" * 20),)),
                     "disagree")


async def test_fork_branches_without_replay(tiny_model_dir, reference):
    async with serving(tiny_model_dir) as s:
        base = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="To be")))).session.id
        fork = (await s.stub.ForkSession(pb.ForkSessionRequest(session_id=base, new_session_id="fork-of-base-0001")))
        assert fork.session.id == "fork-of-base-0001" and fork.session.steps == 5
        a = await predict(s.stub, base, ", or not")
        b = await predict(s.stub, fork.session.id, " is to do")
        assert np.abs(logprobs_of(a) - reference.logprobs(list(b"To be, or not"))[-1]).max() <= TOL
        assert np.abs(logprobs_of(b) - reference.logprobs(list(b"To be is to do"))[-1]).max() <= TOL
        await expect(grpc.StatusCode.ALREADY_EXISTS,
                     s.stub.ForkSession(pb.ForkSessionRequest(session_id=base, new_session_id=fork.session.id)))


async def test_reset_and_delete(tiny_model_dir, reference):
    async with serving(tiny_model_dir) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="noise")))).session.id
        reset = await s.stub.ResetSession(pb.ResetSessionRequest(session_id=sid))
        assert reset.session.steps == 0
        r = await predict(s.stub, sid, "clean")
        assert r.result.steps == 5
        assert np.abs(logprobs_of(r) - reference.logprobs(list(b"clean"))[-1]).max() <= TOL
        # Predict.start resets before feeding, in the same call.
        r = await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="clean"), start=True,
                                                   output=pb.OutputOptions(logprobs=True)))
        assert r.result.steps == 5
        assert np.abs(logprobs_of(r) - reference.logprobs(list(b"clean"))[-1]).max() <= TOL
        deleted = await s.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid))
        assert deleted.steps == 5
        await expect(grpc.StatusCode.NOT_FOUND, predict(s.stub, sid, "x"), sid, "was deleted")
        await expect(grpc.StatusCode.NOT_FOUND, s.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid)))


async def test_ttl_expiry_with_injected_clock(tiny_model_dir):
    clock = FakeClock()
    async with serving(tiny_model_dir, clock=clock, session_ttl=60, reap_interval=0.01) as s:
        short = (await s.stub.CreateSession(pb.CreateSessionRequest(ttl_seconds=10))).session.id
        long = (await s.stub.CreateSession(pb.CreateSessionRequest())).session.id
        clock.advance(9)
        await predict(s.stub, short, "a")  # use restarts the idle timer
        await s.sync()  # the step is kept (fronts mode: the engine saw its commit) before the clock moves
        clock.advance(9)
        got = await s.stub.GetSession(pb.GetSessionRequest(session_id=short))
        assert got.session.idle_seconds == pytest.approx(9) and got.session.expires_in_seconds == pytest.approx(1)
        clock.advance(2)
        await expect(grpc.StatusCode.NOT_FOUND, predict(s.stub, short, "b"), short, "expired after 10s idle")
        assert (await s.stub.GetSession(pb.GetSessionRequest(session_id=long))).session.id == long
        clock.advance(60)
        for _ in range(200):  # the background reaper removes it without being asked
            if s.engine.session_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert s.engine.session_count() == 0
        await expect(grpc.StatusCode.NOT_FOUND, s.stub.GetSession(pb.GetSessionRequest(session_id=long)), "expired")


async def test_streamed_session_does_not_expire_while_held(tiny_model_dir):
    clock = FakeClock()
    async with serving(tiny_model_dir, clock=clock, session_ttl=5) as s:
        call, opened = await open_stream(s.stub)
        clock.advance(100)
        s.engine.reap()
        assert (await stream_step(call, text="still here")).steps == 10
        await call.done_writing()


async def test_lru_eviction_of_idle_sessions(tiny_model_dir):
    async with serving(tiny_model_dir, max_sessions=3) as s:
        ids = [(await s.stub.CreateSession(pb.CreateSessionRequest())).session.id for _ in range(3)]
        await predict(s.stub, ids[0], "used")  # ids[1] is now the least recently used
        held, _ = await open_stream(s.stub, ids[2], create=False)
        fourth = (await s.stub.CreateSession(pb.CreateSessionRequest())).session.id
        listed = await s.stub.ListSessions(pb.ListSessionsRequest())
        assert {x.id for x in listed.sessions} == {ids[0], ids[2], fourth} and listed.max_sessions == 3
        await expect(grpc.StatusCode.NOT_FOUND, predict(s.stub, ids[1], "x"), "evicted", "least recently used")
        # Busy sessions are never evicted: with everything busy, creation is refused.
        holders = [held]
        for sid in (ids[0], fourth):
            holders.append((await open_stream(s.stub, sid, create=False))[0])
        await expect(grpc.StatusCode.RESOURCE_EXHAUSTED, s.stub.CreateSession(pb.CreateSessionRequest()),
                     "max sessions (3)", "--max-sessions")
        for call in holders:
            await call.done_writing()
            await call.read()


async def test_second_writer_is_refused_and_state_untouched(tiny_model_dir, reference):
    async with serving(tiny_model_dir) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="ab")))).session.id
        call, opened = await open_stream(s.stub, sid, create=False)
        assert opened.busy
        before = s.state(sid)
        await expect(grpc.StatusCode.ABORTED, predict(s.stub, sid, "x"), "in use", "one writer at a time")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await open_stream(s.stub, sid, create=False)
        assert info.value.code() == grpc.StatusCode.ABORTED
        await expect(grpc.StatusCode.ABORTED, s.stub.ResetSession(pb.ResetSessionRequest(session_id=sid)))
        await expect(grpc.StatusCode.ABORTED, s.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid)))
        assert same_state(s.state(sid), before) and s.state(sid)[0] == 2
        r = await stream_step(call, text="c", logprobs=True)
        assert np.abs(np.array(r.predictions[0].logprobs) - reference.logprobs(list(b"abc"))[-1]).max() <= TOL
        # Forking a busy session is fine: it copies the last committed state.
        fork = await s.stub.ForkSession(pb.ForkSessionRequest(session_id=sid))
        assert fork.session.steps == 3
        await call.done_writing()
        await call.read()
        assert (await s.stub.GetSession(pb.GetSessionRequest(session_id=sid))).session.steps == 3  # named: kept


async def test_stream_sequence_flags(tiny_model_dir, reference):
    async with serving(tiny_model_dir) as s:
        call, opened = await open_stream(s.stub, "named-stream-session-1")
        await stream_step(call, text="junk")
        await call.write(pb.StreamRequest(step=pb.StreamStep(input=pb.Input(text="ok"), start=True, tag="t1",
                                                             output=pb.OutputOptions(logprobs=True))))
        r = (await call.read()).result
        assert r.steps == 2 and r.tag == "t1"
        assert np.abs(np.array(r.predictions[0].logprobs) - reference.logprobs(list(b"ok"))[-1]).max() <= TOL
        await call.write(pb.StreamRequest(step=pb.StreamStep(input=pb.Input(text="!"), end=True)))
        assert (await call.read()).result.steps == 3
        await expect(grpc.StatusCode.NOT_FOUND, s.stub.GetSession(pb.GetSessionRequest(session_id=opened.id)))
        await call.write(pb.StreamRequest(step=pb.StreamStep(input=pb.Input(text="?"))))
        await expect(grpc.StatusCode.FAILED_PRECONDITION, call.read(), "has ended")


def test_store_unit_lru_and_ttl_order():
    clock = FakeClock()
    events = []
    zero = (np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32))
    store = SessionStore(zero, max_sessions=2, default_ttl=10, clock=clock,
                         on_event=lambda kind, s, why: events.append((kind, s.id)))
    a, b = store.create(), store.create()
    clock.advance(1)
    store.acquire(a.id)
    store.release(a)
    clock.advance(5)
    c = store.create()
    assert [k for k, _ in events] == ["open", "open", "evict", "open"] and events[2][1] == b.id
    clock.advance(5.5)  # a idle 10.5 s > 10: expired; c idle 5.5 s
    assert store.reap() == 1 and len(store) == 1 and store.get(c.id) is c
    assert all(part.flags.writeable is False for part in store.zeros)
