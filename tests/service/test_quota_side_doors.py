"""Per-principal quotas with no side doors, on a real server: every token a principal
makes the model process counts once against --tokens-per-second-per-principal
(Explain's too), and every long-lived call counts against
--max-streams-per-principal (Generate and KServe ModelStreamInfer as well as Stream).
"""
from __future__ import annotations

import asyncio

import grpc
import pytest

from lstm_service.service.proto.inference import grpc_service_pb2 as kpb
from lstm_service.service.proto.inference import grpc_service_pb2_grpc as kpb_grpc
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from principals import as_, tokens_file
from svc_helpers import open_stream, serving


@pytest.fixture
def tokens(tmp_path):
    return str(tokens_file(tmp_path))


async def refused(awaitable, reason_fragment: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert reason_fragment in info.value.details(), info.value.details()


async def test_explain_tokens_count_against_the_token_rate(tiny_model_dir, tokens):
    async with serving(tiny_model_dir, tokens_file=tokens, tokens_per_second_per_principal=0.5,
                       max_tokens_per_message=64) as s:  # a burst of 64 tokens, then 1 every 2 s
        explain = pb.ExplainRequest(input=pb.Input(tokens=[7] * 60), top_k=1)
        await s.stub.Explain(explain, metadata=as_("alice"))  # 60 of her 64
        await refused(s.stub.Explain(explain, metadata=as_("alice")), "--tokens-per-second-per-principal")
        await refused(s.stub.Predict(pb.PredictRequest(input=pb.Input(tokens=[7] * 10)), metadata=as_("alice")),
                      "--tokens-per-second-per-principal")  # the Explain spent them: no other door either
        await s.stub.Explain(explain, metadata=as_("bob"))  # bob's bucket is his own


async def test_explain_with_commit_counts_its_tokens_once(tiny_model_dir, tokens):
    async with serving(tiny_model_dir, tokens_file=tokens, tokens_per_second_per_principal=0.5,
                       max_tokens_per_message=64) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(), metadata=as_("alice"))).session.id
        await s.stub.Explain(pb.ExplainRequest(session_id=sid, input=pb.Input(tokens=[7] * 30), commit=True,
                                               top_k=1), metadata=as_("alice"))
        await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[7] * 30)),
                             metadata=as_("alice"))  # 30 + 30 of 64: the Explain's 30 counted once, not twice
        await refused(s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[7] * 10)),
                                     metadata=as_("alice")), "--tokens-per-second-per-principal")


def stream_infer_request(model: str) -> kpb.ModelInferRequest:
    tensor = kpb.ModelInferRequest.InferInputTensor(name="INPUT_IDS", datatype="INT64", shape=[1, 1])
    tensor.contents.int64_contents.append(5)
    return kpb.ModelInferRequest(model_name=model, inputs=[tensor])


async def test_generate_and_model_stream_infer_count_as_streams(tiny_model_dir, tokens):
    async with serving(tiny_model_dir, tokens_file=tokens, max_streams_per_principal=1,
                       max_generate_tokens=1_000_000) as s:
        kserve = kpb_grpc.GRPCInferenceServiceStub(s.channel)
        model = s.app.card.name
        long_generate = pb.GenerateRequest(prompt=pb.Input(text="a"),
                                           sampling=pb.SamplingParams(max_tokens=1_000_000, seed=1))
        generating = s.stub.Generate(long_generate, metadata=as_("alice"))
        assert (await generating.read()).steps >= 1  # it runs: alice's one stream
        await refused(s.stub.Generate(long_generate, metadata=as_("alice")).read(), "--max-streams-per-principal 1")
        second = s.stub.Stream(metadata=as_("alice"))
        await second.write(pb.StreamRequest(open=pb.OpenStream(create=True)))
        await refused(second.read(), "--max-streams-per-principal 1")
        infer = kserve.ModelStreamInfer(metadata=as_("alice"))
        await infer.write(stream_infer_request(model))
        await refused(infer.read(), "--max-streams-per-principal 1")
        bobs = kserve.ModelStreamInfer(metadata=as_("bob"))  # bob's one stream is his own
        await bobs.write(stream_infer_request(model))
        assert not (await bobs.read()).error_message
        generating.cancel()  # alice's slot comes back when her Generate ends
        alices, _ = await until_open(lambda: open_stream(s.stub, metadata=as_("alice")))
        # ... and now her open Stream is the one: ModelStreamInfer is refused again
        infer = kserve.ModelStreamInfer(metadata=as_("alice"))
        await infer.write(stream_infer_request(model))
        await refused(infer.read(), "--max-streams-per-principal 1")
        await bobs.done_writing()
        assert await bobs.read() is grpc.aio.EOF
        await alices.done_writing()


async def until_open(opening, timeout: float = 5.0):
    """``opening()`` once the slot a cancelled call held is back (its end reaches the engine
    as its handler unwinds, not at the client's cancel)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await opening()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or loop.time() > deadline:
                raise
        await asyncio.sleep(0.05)
