"""KServe v2 tensors <-> token ids, text and scores (service/kserve/tensors.py) without a server:
raw and typed contents, and the refusal for each malformed input."""
from __future__ import annotations

import numpy as np
import pytest

from lstm_service.service.api.errors import InvalidArgument
from lstm_service.service.edge.kserve import tensors
from lstm_service.service.proto.inference import grpc_service_pb2 as pb
from lstm_service.service.core.scoring import score


def request(name: str, datatype: str, shape, raw=None, **contents) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
    if contents:
        tensor.contents.CopyFrom(pb.InferTensorContents(**contents))
    if raw is not None:
        message.raw_input_contents.append(raw)
    return message


def test_ids_come_raw_or_typed_and_text_with_its_length_prefix():
    ids, text = tensors.request_input(request("INPUT_IDS", "INT64", [1, 3], raw=np.array([84, 111, 32], "<i8").tobytes()))
    assert list(ids) == [84, 111, 32] and text == ""
    ids, _ = tensors.request_input(request("INPUT_IDS", "INT64", [1, 2], int64_contents=[7, 8]))
    assert list(ids) == [7, 8]
    word = "Tö be".encode()
    ids, text = tensors.request_input(request("TEXT", "BYTES", [1], raw=len(word).to_bytes(4, "little") + word))
    assert ids is None and text == "Tö be"
    assert tensors.request_input(request("TEXT", "BYTES", [1], bytes_contents=[b"hi"]))[1] == "hi"


@pytest.mark.parametrize("bad, says", [
    (request("INPUT_IDS", "FP32", [1, 1], int64_contents=[1]), "datatype 'FP32'; it must be INT64"),
    (request("INPUT_IDS", "INT64", [2, 1], int64_contents=[1, 2]), "it must be [1, T] with T >= 1"),
    (request("INPUT_IDS", "INT64", [1, 2], raw=b"\0" * 8), "has 8 bytes; shape [1, 2] of INT64 needs 16"),
    (request("INPUT_IDS", "INT64", [1, 2], int64_contents=[1]), "1 values in contents.int64_contents"),
    (request("TEXT", "BYTES", [1], raw=b"\x09\0\0\0hi"), "a 4-byte little-endian length"),
    (request("TEXT", "BYTES", [1], bytes_contents=[b"\xff"]), "not valid UTF-8 (byte 0)"),
    (request("IDS", "INT64", [1, 1], int64_contents=[1]), "unknown input 'IDS'"),
    (pb.ModelInferRequest(), "send exactly one input"),
])
def test_malformed_inputs_are_refused_saying_what_is_allowed(bad, says):
    with pytest.raises(InvalidArgument) as info:
        tensors.request_input(bad)
    assert says in info.value.message


def test_outputs_default_to_ids_and_probs_and_are_written_raw():
    plain = pb.ModelInferRequest()
    assert tuple(tensors.requested_outputs(plain)) == ("TOP_IDS", "TOP_PROBS")
    asking = pb.ModelInferRequest(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="LOGITS")])
    with pytest.raises(InvalidArgument, match="unknown output 'LOGITS'"):
        tensors.requested_outputs(asking)
    (scores,) = score(np.random.default_rng(1).normal(size=(1, 2, 16)).astype(np.float32), [False], [3])
    response = pb.ModelInferResponse()
    tensors.write_outputs(response, scores, ["TOP_IDS", "LOGPROBS"])
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("TOP_IDS", "INT64", [1, 1, 3]), ("LOGPROBS", "FP32", [1, 1, 16])]
    assert list(np.frombuffer(response.raw_output_contents[0], "<i8")) == list(scores.top_ids[0])
