"""Revocation that bites, with real server processes in both modes: a principal
removed from --tokens-file, then SIGHUP (in the default mode the supervisor passes
it to the fronts), has its open Stream, Generate and KServe ModelStreamInfer calls
ended UNAUTHENTICATED within a second; another principal's stream goes on."""
from __future__ import annotations

import os
import queue
import signal
import time

import grpc
import pytest

from tools.server_process import ServerProcess
from lstm_service.service.proto.inference import grpc_service_pb2 as kpb
from lstm_service.service.proto.inference import grpc_service_pb2_grpc as kpb_grpc
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc
from principals import as_, tokens_file

MODES = {"default": ["--fronts", "1"], "single": ["--fronts", "0"]}


class OpenStream:
    """A bidirectional call fed from a queue, so the test writes and reads at will."""

    def __init__(self, method, metadata) -> None:
        self.requests: "queue.Queue" = queue.Queue()
        self.responses = method(iter(self.requests.get, None), metadata=metadata, timeout=20)

    def ask(self, request):
        self.requests.put(request)
        return next(self.responses)

    def close(self) -> None:
        self.requests.put(None)
        self.responses.cancel()


def ending(responses) -> grpc.RpcError:
    """Read until the call ends; the error it ends with (reading what was already on the way first)."""
    try:
        for _ in responses:
            pass
    except grpc.RpcError as exc:
        return exc
    pytest.fail("the call ended OK")


def infer_request(model: str) -> kpb.ModelInferRequest:
    tensor = kpb.ModelInferRequest.InferInputTensor(name="INPUT_IDS", datatype="INT64", shape=[1, 1])
    tensor.contents.int64_contents.append(5)
    return kpb.ModelInferRequest(model_name=model, inputs=[tensor])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_revoked_tokens_end_their_open_streams_within_a_second(tiny_model_dir, tmp_path, mode):
    tokens = tokens_file(tmp_path, "alice", "bob")
    with ServerProcess(["--model", str(tiny_model_dir), "--device", "cpu", "--tokens-file", str(tokens),
                        "--max-generate-tokens", "1000000", *MODES[mode]]) as server, \
            grpc.insecure_channel(server.target) as channel:
        stub, kserve = pb_grpc.LstmServiceStub(channel), kpb_grpc.GRPCInferenceServiceStub(channel)
        model = stub.ListModels(pb.ListModelsRequest(), metadata=as_("bob")).models[0].name
        step = pb.StreamRequest(step=pb.StreamStep(input=pb.Input(text="a")))
        alices_stream = OpenStream(stub.Stream, as_("alice"))
        assert alices_stream.ask(pb.StreamRequest(open=pb.OpenStream(create=True))).HasField("opened")
        assert alices_stream.ask(step).result.steps == 1
        generating = stub.Generate(pb.GenerateRequest(prompt=pb.Input(text="a"), sampling=pb.SamplingParams(
            max_tokens=1_000_000, seed=1)), metadata=as_("alice"), timeout=20)
        assert next(generating).steps >= 1
        alices_infer = OpenStream(kserve.ModelStreamInfer, as_("alice"))
        assert not alices_infer.ask(infer_request(model)).error_message
        bobs_stream = OpenStream(stub.Stream, as_("bob"))
        bobs_stream.ask(pb.StreamRequest(open=pb.OpenStream(create=True)))

        tokens_file(tmp_path, "bob")  # alice is revoked
        reloaded = time.monotonic()
        os.kill(server.pid, signal.SIGHUP)
        for name, responses in (("Stream", alices_stream.responses), ("Generate", generating),
                                ("ModelStreamInfer", alices_infer.responses)):
            error = ending(responses)
            took = time.monotonic() - reloaded
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, error.code(), error.details())
            assert "revoked" in error.details(), error.details()
            assert took < 1.0, f"{name} ended {took:.2f} s after the reload"
        assert bobs_stream.ask(step).result.steps == 1  # bob's stream goes on
        with pytest.raises(grpc.RpcError) as info:
            stub.ListModels(pb.ListModelsRequest(), metadata=as_("alice"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for call in (alices_stream, alices_infer, bobs_stream):
            call.close()
