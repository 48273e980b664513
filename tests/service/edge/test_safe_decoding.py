"""Request decoding that cannot fail inside grpc (service/handlers.py): a corrupt message reaches
the handler as Undecodable and is refused as INVALID_ARGUMENT."""
from __future__ import annotations

import pytest

from lstm_service.service.api.errors import InvalidArgument
from lstm_service.service.edge.safe_decoding import Undecodable, _decoder, check_decoded
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb


def test_a_valid_message_decodes_and_passes():
    request = pb.PredictRequest(session_id="abc", input=pb.Input(text="hi"))
    decoded = _decoder(pb.PredictRequest)(request.SerializeToString())
    assert check_decoded(decoded) == request


def test_corrupt_bytes_become_undecodable_and_are_refused_with_the_type_named():
    decoded = _decoder(pb.PredictRequest)(b"\x0a\xff\xff\xff")  # a length running past the end
    assert isinstance(decoded, Undecodable) and decoded.type_name == "lstm.v1.PredictRequest"
    with pytest.raises(InvalidArgument) as info:
        check_decoded(decoded)
    assert info.value.reason == "UNDECODABLE_REQUEST" and "not a valid lstm.v1.PredictRequest" in info.value.message
