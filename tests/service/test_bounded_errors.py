"""Every error is bounded whatever the request held (docs/security.md, Bounded answers): the
status message at most 1 KB, the grpc-status-details-bin trailer at most 4 KB, and the
message names the first few offenders and how many, over a real server and a default
channel (whose 8 KB metadata limit turned the 1.38 MB trailer into RESOURCE_EXHAUSTED)."""
from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from lstm_service.service.proto.inference import grpc_service_pb2 as kpb
from lstm_service.service.proto.inference import grpc_service_pb2_grpc as kpb_grpc
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.edge.error_status import DETAILS_KEY, MAX_DETAILS_BYTES, MAX_MESSAGE_BYTES, rich_status
from svc_helpers import serving


def details_of(error: grpc.aio.AioRpcError) -> bytes:
    return dict(error.trailing_metadata() or ()).get(DETAILS_KEY, b"")


def assert_bounded(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The error is within the bounds; its decoded details."""
    assert len(error.details().encode()) <= MAX_MESSAGE_BYTES, len(error.details())
    raw = details_of(error)
    assert raw and len(raw) <= MAX_DETAILS_BYTES, len(raw)
    return status_pb2.Status.FromString(raw)


async def test_explain_with_100000_layers_is_a_short_invalid_argument(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        request = pb.ExplainRequest(input=pb.Input(text="ab"), layers=list(range(100_000)))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await s.stub.Explain(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = assert_bounded(refused.value)
        message = refused.value.details()
        assert message.startswith("layers [2, 3, 4] and 99995 more (99998 in all) out of range") and "allowed distinct layer indices 0 to 1" in message
        assert details.message == message


async def test_explain_top_units_zero_is_refused_as_documented(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await s.stub.Explain(pb.ExplainRequest(input=pb.Input(text="ab"), top_units=0))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "top_units 0 not allowed: 1 to" in refused.value.details()
        bad = assert_bounded(refused.value).details[1]
        violations = error_details_pb2.BadRequest()
        bad.Unpack(violations)
        assert violations.field_violations[0].field == "top_units"


async def test_kserve_infer_with_3000_long_named_inputs_is_a_short_invalid_argument(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        kserve = kpb_grpc.GRPCInferenceServiceStub(s.channel)
        request = kpb.ModelInferRequest(model_name=s.engine.card.name)
        for i in range(3000):
            request.inputs.add(name=f"{i:05d}" + "n" * 300, datatype="INT64", shape=[1, 1])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await kserve.ModelInfer(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert_bounded(refused.value)
        assert "2997 more (3000 in all)" in refused.value.details()


async def test_a_kserve_stream_error_message_is_bounded_too(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        kserve = kpb_grpc.GRPCInferenceServiceStub(s.channel)
        request = kpb.ModelInferRequest(model_name=s.engine.card.name, id="r1")
        for i in range(3000):
            request.inputs.add(name=f"{i:05d}" + "n" * 300, datatype="INT64", shape=[1, 1])
        call = kserve.ModelStreamInfer()
        await call.write(request)
        reply = await call.read()
        await call.done_writing()
        assert reply.error_message.startswith("INVALID_ARGUMENT: send exactly one input")
        assert len(reply.error_message.encode()) <= MAX_MESSAGE_BYTES and reply.infer_response.id == "r1"


async def test_fork_with_a_megabyte_new_id_on_a_missing_source_is_invalid_argument(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        request = pb.ForkSessionRequest(session_id="missing-source-0000001", new_session_id="x" * (1 << 20))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await s.stub.ForkSession(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("new_session_id 'xxxx")
        assert_bounded(refused.value)


def test_rich_status_bounds_every_part_whatever_it_is_given():
    """The backstop in service/edge/error_status.py, for messages no validator summarised."""
    huge = "é" * 100_000  # two bytes each: the cut must fall on a character boundary
    status = rich_status("INVALID_ARGUMENT", huge, "R" * 5000, field="f" * 5000,
                         metadata={f"k{i}" * 100: "v" * 10_000 for i in range(50)}, retry_after_ms=10)
    assert len(status.message.encode()) <= MAX_MESSAGE_BYTES and "cut" in status.message
    status.message.encode().decode()  # valid UTF-8
    assert len(status.SerializeToString()) <= MAX_DETAILS_BYTES
