"""Fairness with a real server and real channels: one principal cannot evict or
starve another's sessions, per-principal limits refuse with RESOURCE_EXHAUSTED
naming the limit, a long input runs in chunks that match one long call, and an
idle stream cannot pin its session forever."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from principals import as_, tokens_file
from svc_helpers import open_stream, serving, stream_step


@pytest.fixture
def tokens(tmp_path):
    return str(tokens_file(tmp_path))


async def refused(awaitable, *fragments):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details()


async def test_fifty_creates_by_one_principal_evict_nothing_of_another(tiny_model_dir, tokens):
    async with serving(tiny_model_dir, tokens_file=tokens, max_sessions=50) as s:
        bobs = [(await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="b")), metadata=as_("bob")))
                .session.id for _ in range(10)]
        for _ in range(50):
            await s.stub.CreateSession(pb.CreateSessionRequest(), metadata=as_("alice"))
        for sid in bobs:
            got = await s.stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=as_("bob"))
            assert got.session.steps == 1
        alice = await s.stub.ListSessions(pb.ListSessionsRequest(), metadata=as_("alice"))
        assert alice.total == 40  # she evicted her own least recently used, never bob's


async def test_per_principal_session_and_stream_limits(tiny_model_dir, tokens):
    async with serving(tiny_model_dir, tokens_file=tokens, max_sessions_per_principal=2,
                       max_streams_per_principal=1) as s:
        for _ in range(2):
            await s.stub.CreateSession(pb.CreateSessionRequest(), metadata=as_("alice"))
        await refused(s.stub.CreateSession(pb.CreateSessionRequest(), metadata=as_("alice")),
                      "--max-sessions-per-principal 2")
        await s.stub.CreateSession(pb.CreateSessionRequest(), metadata=as_("bob"))  # bob has his own
        first, _ = await open_stream(s.stub, metadata=as_("bob"))
        second = s.stub.Stream(metadata=as_("bob"))
        await second.write(pb.StreamRequest(open=pb.OpenStream(create=True)))
        await refused(second.read(), "--max-streams-per-principal 1")
        await first.done_writing()
        assert await first.read() is grpc.aio.EOF
        again, _ = await open_stream(s.stub, metadata=as_("bob"))  # the slot came back
        await again.done_writing()


async def test_token_rate_per_principal(tiny_model_dir, tokens):
    async with serving(tiny_model_dir, tokens_file=tokens, tokens_per_second_per_principal=50,
                       max_tokens_per_message=64) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(), metadata=as_("alice"))).session.id
        step = pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[1] * 60))
        await s.stub.Predict(step, metadata=as_("alice"))  # the burst is one whole message
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.Predict(step, metadata=as_("alice"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry in about" in info.value.details()
        assert int(dict(info.value.trailing_metadata())["retry-after-ms"]) > 0
        assert (await s.stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=as_("alice"))).session.steps == 60
        await s.stub.Predict(pb.PredictRequest(input=pb.Input(tokens=[1] * 60)), metadata=as_("bob"))  # not bob's limit


async def test_a_long_input_runs_in_chunks_equal_to_one_call(tiny_model_dir, reference):
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 256, 600).tolist()
    async with serving(tiny_model_dir, prefill_chunk=128) as s:
        calls = s.engine.runner.stats.batches
        reply = await s.stub.Predict(pb.PredictRequest(
            input=pb.Input(tokens=tokens), output=pb.OutputOptions(all_positions=True, logprobs=True, top_k=2)))
        assert s.engine.runner.stats.batches - calls == 5  # 128 * 4 + 88
    got = np.array([list(p.logprobs) for p in reply.result.predictions])
    assert got.shape == (600, 256) and [p.position for p in reply.result.predictions] == list(range(600))
    assert np.abs(got - reference.logprobs(tokens)).max() <= 1e-4


async def test_an_idle_stream_is_ended_and_its_session_kept(tiny_model_dir):
    async with serving(tiny_model_dir, stream_idle_timeout=0.3) as s:
        call, opened = await open_stream(s.stub, "idle-stream-session-01")
        await stream_step(call, text="abc")
        await asyncio.sleep(0.2)
        await stream_step(call, text="d")  # activity resets the clock
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call.read(), 5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--stream-idle-timeout" in info.value.details()
        got = await s.stub.GetSession(pb.GetSessionRequest(session_id=opened.id))
        assert got.session.steps == 4 and not got.session.busy
