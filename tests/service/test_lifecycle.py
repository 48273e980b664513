"""Health, reflection, metrics, and graceful shutdown of a real server."""
import asyncio
import socket
import time
import urllib.request

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from svc_helpers import open_stream, serving, stream_step

SERVICE = "lstm.v1.LstmService"


async def test_health_answers(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        health = health_pb2_grpc.HealthStub(s.channel)
        for name in ("", SERVICE):
            got = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert got.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health.Check(health_pb2.HealthCheckRequest(service="nope.Service"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
async def test_reflection_lists_and_describes_the_service(tiny_model_dir, version):
    """Both protocols (current grpcurl and Node clients ask for v1 first; the messages are the same)."""
    async with serving(tiny_model_dir) as s:
        call = s.channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
        ]
        responses = [r async for r in call(iter(requests))]
        names = {x.name for x in responses[0].list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health", "inference.GRPCInferenceService"} <= names
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in responses[1].file_descriptor_response.file_descriptor_proto]
        service = next(svc for f in files for svc in f.service if svc.name == "LstmService")
        assert {"Stream", "Predict", "Generate", "CreateSession", "ForkSession"} <= {m.name for m in service.method}


async def test_model_description_reports_real_providers(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        model = (await s.stub.GetModel(pb.GetModelRequest())).model
        assert (model.name, model.cell, model.vocab_kind, model.vocab_size) == ("tiny-lstm", "lstm", "bytes", 256)
        assert (model.layers, model.hidden_size, model.precision) == (2, 32, "fp32")
        assert model.providers == ["CPUExecutionProvider"]
        assert set(model.precisions) == {"fp32", "int8"} and len(model.sha256) == 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_metrics_endpoint(tiny_model_dir):
    port = free_port()
    async with serving(tiny_model_dir, metrics_port=port) as s:
        call, _ = await open_stream(s.stub)
        await stream_step(call, text="hello")
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read())
        await call.done_writing()
    text = body.decode()
    for name in ("lstm_requests_total", "lstm_step_seconds_bucket", "lstm_ort_run_seconds_bucket",
                 "lstm_batch_size_bucket", "lstm_active_sessions 1.0", "lstm_tokens_total 5.0",
                 'lstm_session_events_total{kind="open"} 1.0', "lstm_queue_depth"):
        assert name in text, name


async def test_graceful_shutdown_finishes_inflight_and_refuses_new(tiny_model_dir):
    async with serving(tiny_model_dir, grace=10) as s:
        call, _ = await open_stream(s.stub)
        await stream_step(call, text="before")
        began = time.monotonic()
        stopping = asyncio.ensure_future(s.app.stop())
        while not s.app.servicer.draining:
            await asyncio.sleep(0.001)
        # Health says NOT_SERVING (asked in-process: the port no longer takes new calls)...
        status = await s.app.health.Check(health_pb2.HealthCheckRequest(service=SERVICE), None)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # ...new calls are refused...
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.ListModels(pb.ListModelsRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # ...while the stream that was running goes on and finishes.
        assert (await stream_step(call, text=" during")).steps == 13
        assert (await stream_step(call, text=" shutdown")).steps == 22
        assert not stopping.done()
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        await asyncio.wait_for(stopping, 5)
        assert time.monotonic() - began < 5, "stop waited for the whole grace period"


async def test_draining_servicer_says_unavailable(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        s.app.servicer.draining = True  # the state stop() puts it in before closing the port
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.Predict(pb.PredictRequest(input=pb.Input(text="x")))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in info.value.details()
        s.app.servicer.draining = False


async def test_an_idle_stream_does_not_hold_shutdown(tiny_model_dir):
    async with serving(tiny_model_dir, grace=30) as s:
        call, _ = await open_stream(s.stub)
        await stream_step(call, text="idle after this")
        began = time.monotonic()
        await asyncio.wait_for(s.app.stop(), 10)
        assert time.monotonic() - began < 5, "an idle stream held shutdown"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in info.value.details()
