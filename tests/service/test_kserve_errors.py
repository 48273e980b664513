"""Bad KServe v2 requests get a precise status and message and change no state;
both raw_input_contents and typed contents are accepted. Requests are built
with the generated stub here, so every field can be set (tritonclient refuses
some mistakes before sending)."""
import grpc
import numpy as np
import pytest

from lstm_service.service.edge.kserve.sequence import session_id_for
from lstm_service.service.proto.inference import grpc_service_pb2 as pb
from lstm_service.service.proto.inference import grpc_service_pb2_grpc as pb_grpc

from svc_helpers import same_state, serving

Tensor = pb.ModelInferRequest.InferInputTensor


def request(model: str, *tensors, raw=(), seq=None, start=False, end=False, **params) -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name=model, inputs=list(tensors), raw_input_contents=list(raw))
    if seq is not None:
        r.parameters["sequence_id"].uint64_param = seq
        r.parameters["sequence_start"].bool_param = start
        r.parameters["sequence_end"].bool_param = end
    for key, value in params.items():
        if isinstance(value, bool):
            r.parameters[key].bool_param = value
        else:
            r.parameters[key].int64_param = value
    return r


def ids(tokens, datatype="INT64", shape=None) -> Tensor:
    return Tensor(name="INPUT_IDS", datatype=datatype, shape=shape or [1, len(tokens)])


def raw_ids(tokens) -> bytes:
    return np.asarray(tokens, dtype="<i8").tobytes()


def typed_ids(tokens) -> Tensor:
    t = ids(tokens)
    t.contents.int64_contents.extend(tokens)
    return t


async def expect(call, code: grpc.StatusCode, *phrases: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    for phrase in phrases:
        assert phrase in info.value.details(), info.value.details()


async def test_bad_requests_are_invalid_argument_and_change_nothing(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        stub, m = pb_grpc.GRPCInferenceServiceStub(s.channel), s.app.card.name
        await stub.ModelInfer(request(m, ids([5, 6]), raw=[raw_ids([5, 6])], seq=9, start=True))
        before = s.state(session_id_for(9))
        bad = {
            "datatype 'INT32'; it must be INT64": request(m, ids([1], "INT32"), raw=[raw_ids([1])], seq=9),
            "shape [2, 1]; it must be [1, T]": request(m, ids([1, 2], shape=[2, 1]), raw=[raw_ids([1, 2])], seq=9),
            "send exactly one input": request(m, seq=9),
            "send exactly one input, INPUT_IDS": request(
                m, ids([1]), Tensor(name="TEXT", datatype="BYTES", shape=[1]), raw=[raw_ids([1]), b"\1\0\0\0a"], seq=9),
            "unknown input 'tokens'": request(m, Tensor(name="tokens", datatype="INT64", shape=[1, 1]),
                                               raw=[raw_ids([1])], seq=9),
            "has 16 bytes; shape [1, 1] of INT64 needs 8": request(m, ids([1]), raw=[raw_ids([1, 2])], seq=9),
            "token id 300 at position 1 is outside the vocabulary": request(m, ids([1, 300]), raw=[raw_ids([1, 300])], seq=9),
            "not both": request(m, typed_ids([1]), raw=[raw_ids([1])], seq=9),
            "top_k 999 is out of range": request(m, ids([1]), raw=[raw_ids([1])], seq=9, top_k=999),
            "sequence_start/sequence_end need a sequence_id": request(m, ids([1]), raw=[raw_ids([1])], sequence_start=True),
            "must be a bool_param": request(m, ids([1]), raw=[raw_ids([1])], sequence_end=1),
            "TEXT is not valid UTF-8": request(m, Tensor(name="TEXT", datatype="BYTES", shape=[1]), raw=[b"\1\0\0\0\xff"]),
        }
        unknown_output = request(m, ids([1]), raw=[raw_ids([1])], seq=9)
        unknown_output.outputs.add(name="LOGITS")
        bad["unknown output 'LOGITS': allowed TOP_IDS, TOP_PROBS, LOGPROBS"] = unknown_output
        for phrase, req in bad.items():
            await expect(stub.ModelInfer(req), grpc.StatusCode.INVALID_ARGUMENT, phrase)
        await expect(stub.ModelInfer(request("nope", ids([1]), raw=[raw_ids([1])])), grpc.StatusCode.NOT_FOUND,
                     "model 'nope' is not served here", repr(m))
        await expect(stub.ModelInfer(request(m, ids([1]), raw=[raw_ids([1])], seq=10)), grpc.StatusCode.NOT_FOUND,
                     "sequence 10 is not active")
        corrupt = s.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        await expect(corrupt(b"\xff\xff\xff"), grpc.StatusCode.INVALID_ARGUMENT, "not a valid inference.ModelInferRequest")
        assert same_state(s.state(session_id_for(9)), before)
        await s.sync()
        assert s.engine.session_count() == 1  # no sequence 10 was made by the failed step


async def test_typed_contents_give_what_raw_contents_give(tiny_model_dir):
    tokens = list("to be or not".encode())
    async with serving(tiny_model_dir) as s:
        stub, m = pb_grpc.GRPCInferenceServiceStub(s.channel), s.app.card.name
        raw = await stub.ModelInfer(request(m, ids(tokens), raw=[raw_ids(tokens)], all_positions=True))
        typed = await stub.ModelInfer(request(m, typed_ids(tokens), all_positions=True))
        text = Tensor(name="TEXT", datatype="BYTES", shape=[1])
        text.contents.bytes_contents.append(bytes(tokens))
        as_text = await stub.ModelInfer(request(m, text, all_positions=True))
        raw_text = await stub.ModelInfer(request(m, Tensor(name="TEXT", datatype="BYTES", shape=[1]),
                                                 raw=[len(tokens).to_bytes(4, "little") + bytes(tokens)],
                                                 all_positions=True))
        assert [o.name for o in raw.outputs] == ["TOP_IDS", "TOP_PROBS"]
        assert list(raw.outputs[0].shape) == [1, len(tokens), 5]
        for other in (typed, as_text, raw_text):
            assert list(other.raw_output_contents) == list(raw.raw_output_contents)


async def test_stream_reports_a_bad_request_and_goes_on(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        stub, m = pb_grpc.GRPCInferenceServiceStub(s.channel), s.app.card.name
        good = request(m, ids([3]), raw=[raw_ids([3])], seq=5, start=True)
        good.id = "good"
        worse = request(m, ids([3], "FP32"), raw=[raw_ids([3])], seq=5)
        worse.id = "bad"
        last = request(m, ids([4]), raw=[raw_ids([4])], seq=5, end=True)
        last.id = "last"
        call = stub.ModelStreamInfer()
        replies = {}
        for r in (good, worse, last):
            await call.write(r)
            reply = await call.read()
            replies[reply.infer_response.id] = reply
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert replies["bad"].error_message.startswith("INVALID_ARGUMENT: input INPUT_IDS has datatype 'FP32'")
        assert not replies["good"].error_message and not replies["last"].error_message
        await s.sync()
        assert s.engine.session_count() == 0


async def test_stream_answers_an_undecodable_message_and_goes_on(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        m = s.app.card.name
        call = s.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                       response_deserializer=pb.ModelStreamInferResponse.FromString)()
        await call.write(b"\xff\xff\xff")
        bad = await call.read()
        assert bad.error_message.startswith("INVALID_ARGUMENT: the request is not a valid inference.ModelInferRequest")
        good = request(m, ids([3]), raw=[raw_ids([3])])
        good.id = "after"
        await call.write(good.SerializeToString())
        reply = await call.read()
        assert reply.infer_response.id == "after" and not reply.error_message
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF


async def test_draining_ends_an_idle_stream_and_reports_not_ready(tiny_model_dir):
    import asyncio

    async with serving(tiny_model_dir, grace=30) as s:
        stub, m = pb_grpc.GRPCInferenceServiceStub(s.channel), s.app.card.name
        call = stub.ModelStreamInfer()
        await call.write(request(m, ids([3]), raw=[raw_ids([3])], seq=1, start=True))
        assert not (await call.read()).error_message
        s.app.servicer.draining = True  # what stop() sets first
        assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready
        assert not (await stub.ModelReady(pb.ModelReadyRequest(name=m))).ready
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        await expect(stub.ModelInfer(request(m, ids([3]), raw=[raw_ids([3])])), grpc.StatusCode.UNAVAILABLE,
                     "shutting down")
        s.app.servicer.draining = False
        await asyncio.wait_for(s.app.stop(), 10)  # an idle KServe stream must not hold it for the 30 s grace
        await expect(call.read(), grpc.StatusCode.UNAVAILABLE, "shutting down")
