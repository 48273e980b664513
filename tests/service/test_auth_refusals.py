"""UNAUTHENTICATED as every other error: with google.rpc.Status details (an ErrorInfo
with a stable reason) in grpc-status-details-bin, on every service and call shape;
and a call with two ``authorization`` headers is refused as ambiguous, whichever
tokens they hold."""
from __future__ import annotations


import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from lstm_service.service.proto.inference import grpc_service_pb2 as kpb
from lstm_service.service.proto.inference import grpc_service_pb2_grpc as kpb_grpc
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from principals import bearer, tokens_file
from svc_helpers import serving


@pytest.fixture
def tokens(tmp_path):
    return str(tokens_file(tmp_path))


async def unauthenticated(awaitable) -> tuple:
    """The refusal's message and its ErrorInfo (read from grpc-status-details-bin)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
    blob = dict(info.value.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(blob, bytes), "no grpc-status-details-bin on UNAUTHENTICATED"
    status = status_pb2.Status.FromString(blob)
    assert status.code == grpc.StatusCode.UNAUTHENTICATED.value[0] and status.message == info.value.details()
    error_info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(error_info) for d in status.details), status
    assert error_info.domain == "lstm.v1"
    return info.value.details(), error_info.reason


def calls(s, metadata):
    """One call of every shape, on both services."""
    kserve = kpb_grpc.GRPCInferenceServiceStub(s.channel)
    stream = s.stub.Stream(metadata=metadata)
    return [
        s.stub.ListModels(pb.ListModelsRequest(), metadata=metadata),
        s.stub.Generate(pb.GenerateRequest(prompt=pb.Input(text="a")), metadata=metadata).read(),
        stream.read(),
        kserve.ServerMetadata(kpb.ServerMetadataRequest(), metadata=metadata),
    ]


async def test_unauthenticated_carries_error_info_on_every_call(tiny_model_dir, tokens):
    async with serving(tiny_model_dir, tokens_file=tokens) as s:
        for metadata in ((), (("authorization", "Bearer not-a-token"),), (("authorization", "Basic eA=="),)):
            for call in calls(s, metadata):
                _message, reason = await unauthenticated(call)
                assert reason == "UNAUTHENTICATED"


async def test_two_authorization_headers_are_refused_as_ambiguous(tiny_model_dir, tokens):
    async with serving(tiny_model_dir, tokens_file=tokens) as s:
        for pair in ((bearer("alice"), bearer("bob")), (bearer("alice"), bearer("alice")),
                     (bearer("alice"), ("authorization", "Bearer not-a-token"))):
            for call in calls(s, pair):
                message, reason = await unauthenticated(call)
                assert reason == "AMBIGUOUS_CREDENTIALS"
                assert "2 authorization headers" in message and "ambiguous" in message and "exactly one" in message
        assert (await s.stub.ListModels(pb.ListModelsRequest(), metadata=(bearer("alice"),))).models  # one: fine
