"""Every error status with a message that says what is allowed, and no
rejected request changes a session's state."""
import grpc
import pytest

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from svc_helpers import open_stream, same_state, serving

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def expect(code, awaitable, *fragments):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details(), info.value.details()
    return info.value


def step(sid, **input_):
    return pb.PredictRequest(session_id=sid, input=pb.Input(**input_))


async def test_invalid_arguments_name_the_allowed_range_and_change_nothing(tiny_model_dir):
    async with serving(tiny_model_dir, max_tokens_per_message=16, max_generate_tokens=50) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="state")))).session.id
        before = s.state(sid)
        stub = s.stub
        cases = [
            (stub.Predict(step(sid, tokens=[1, 256])), "token id 256 at position 1", "allowed 0 to 255"),
            (stub.Predict(step(sid, tokens=[-1])), "token id -1", "allowed 0 to 255"),
            (stub.Predict(step(sid)), "input is empty", "1 to 16 tokens"),
            (stub.Predict(step(sid, tokens=[1] * 17)), "17 tokens", "allowed 1 to 16"),
            (stub.Predict(step(sid, text="x" * 17)), "17 tokens", "allowed 1 to 16"),
            (stub.Predict(step(sid, tokens=[1], text="a")), "either tokens or text"),
            (stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="a"),
                                            output=pb.OutputOptions(top_k=257))), "top_k 257", "allowed 0 to 256"),
            (stub.CreateSession(pb.CreateSessionRequest(session_id="short")), "16 to 128 characters"),
            (stub.CreateSession(pb.CreateSessionRequest(session_id="bad id with spaces!!")), "[A-Za-z0-9_-]"),
            (stub.CreateSession(pb.CreateSessionRequest(ttl_seconds=10**6)), "ttl_seconds", "allowed 1 to 86400"),
            (stub.ListSessions(pb.ListSessionsRequest(limit=5000)), "limit 5000", "1000"),
            (stub.GetSession(pb.GetSessionRequest()), "session_id is required"),
        ]
        sampling = [
            (pb.SamplingParams(max_tokens=51), "max_tokens 51", "allowed 1 to 50"),
            (pb.SamplingParams(temperature=-1), "temperature -1", "0 (greedy) to 10"),
            (pb.SamplingParams(top_p=0.0), "top_p 0", "above 0 up to 1"),
            (pb.SamplingParams(top_p=1.5), "top_p 1.5", "above 0 up to 1"),
            (pb.SamplingParams(top_k=300), "top_k 300", "0 (no cut) to 256"),
            (pb.SamplingParams(stop=["x"] * 17), "17 stop sequences", "at most 16"),
            (pb.SamplingParams(stop=[""]), "1 to 256 UTF-8 bytes"),
        ]
        for params, *fragments in sampling:
            call = stub.Generate(pb.GenerateRequest(session_id=sid, sampling=params, prompt=pb.Input(text="p")))
            cases.append((call.read(), *fragments))
        cases.append((stub.Generate(pb.GenerateRequest(session_id=sid, prompt=pb.Input(tokens=[999]))).read(),
                      "prompt: token id 999"))
        for awaitable, *fragments in cases:
            await expect(INVALID, awaitable, *fragments)
        assert same_state(s.state(sid), before)
        await s.sync()
        assert s.engine.session_count() == 1


async def test_stream_protocol_errors(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        call = s.stub.Stream()
        await call.write(pb.StreamRequest(step=pb.StreamStep(input=pb.Input(text="x"))))
        await expect(INVALID, call.read(), "first message on a stream must be `open`")
        call, _ = await open_stream(s.stub, "stream-protocol-test-1")
        before = s.state("stream-protocol-test-1")
        await call.write(pb.StreamRequest(open=pb.OpenStream(create=True)))
        await expect(INVALID, call.read(), "`open` may only be the first message")
        assert same_state(s.state("stream-protocol-test-1"), before)
        call, _ = await open_stream(s.stub, "stream-protocol-test-1", create=False)
        await call.write(pb.StreamRequest(step=pb.StreamStep(input=pb.Input(tokens=[512]))))
        await expect(INVALID, call.read(), "allowed 0 to 255")
        assert same_state(s.state("stream-protocol-test-1"), before)
        got = await s.stub.GetSession(pb.GetSessionRequest(session_id="stream-protocol-test-1"))
        assert not got.session.busy  # the failed stream let go


async def test_not_found_already_exists_precondition(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        ghost = "no-such-session-0000"
        await expect(grpc.StatusCode.NOT_FOUND, s.stub.Predict(step(ghost, text="x")), ghost, "does not exist")
        await expect(grpc.StatusCode.NOT_FOUND, s.stub.GetSession(pb.GetSessionRequest(session_id=ghost)))
        await expect(grpc.StatusCode.NOT_FOUND, s.stub.ForkSession(pb.ForkSessionRequest(session_id=ghost)))
        await expect(grpc.StatusCode.NOT_FOUND, s.stub.Generate(pb.GenerateRequest(session_id=ghost)).read())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await open_stream(s.stub, ghost, create=False)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        await expect(grpc.StatusCode.NOT_FOUND, s.stub.GetModel(pb.GetModelRequest(name="gpt-5")),
                     "'gpt-5' is not served here", "tiny-lstm")
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(session_id="taken-session-id-01"))).session.id
        await expect(grpc.StatusCode.ALREADY_EXISTS, s.stub.CreateSession(pb.CreateSessionRequest(session_id=sid)))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await open_stream(s.stub, sid, create=True)
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        await expect(grpc.StatusCode.FAILED_PRECONDITION,
                     s.stub.Generate(pb.GenerateRequest(session_id=sid)).read(), "consumed no token yet", "prompt")
        await expect(grpc.StatusCode.FAILED_PRECONDITION, s.stub.Generate(pb.GenerateRequest()).read(),
                     "a prompt is required")
        assert s.state(sid)[0] == 0 and not (await s.stub.GetSession(pb.GetSessionRequest(session_id=sid))).session.busy


async def test_errors_are_counted_by_method_and_code(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        await expect(INVALID, s.stub.Predict(step("", tokens=[])))
        await s.stub.ListModels(pb.ListModelsRequest())
        assert await s.requests_counted("Predict", "INVALID_ARGUMENT", 1) == 1
        assert await s.requests_counted("ListModels", "OK", 1) == 1
