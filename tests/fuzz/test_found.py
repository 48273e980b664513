"""Defects the fuzzer found beyond issue 10's list, each as a minimal failing
test with a real server (in its own process) and a real channel."""
import time

import grpc
import pytest

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

from .server import ServerProcess


@pytest.fixture(scope="module")
def channel(tiny_model_dir):
    with ServerProcess(tiny_model_dir) as server, grpc.insecure_channel(server.target) as channel:
        yield channel


@pytest.fixture
def stub(channel):
    return pb_grpc.LstmServiceStub(channel)


def settled_steps(stub, session_id: str) -> int:
    for _ in range(200):
        session = stub.GetSession(pb.GetSessionRequest(session_id=session_id)).session
        if not session.busy:
            return session.steps
        time.sleep(0.01)
    raise AssertionError(f"{session_id} still busy")


@pytest.mark.parametrize("read", [1])
def test_a_cancelled_generate_keeps_every_token_the_client_received(stub, read):
    """Found by the fuzzer: cancel a Generate after reading 1 (or 2) tokens and the
    session sometimes holds fewer tokens than the client received (the token
    being written when the cancel came was sent, yet not committed)."""
    short = []
    for attempt in range(40):
        sid = f"found-generate-{read}-{attempt:04d}"
        stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(text="a")))
        call = stub.Generate(pb.GenerateRequest(session_id=sid, prompt=pb.Input(text="b"),
                                                sampling=pb.SamplingParams(max_tokens=4096, seed=attempt)))
        received = [next(call).token for _ in range(read)]
        call.cancel()
        kept = settled_steps(stub, sid) - 2
        if kept < len(received):
            short.append((attempt, len(received), kept))
        stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid))
    assert not short, f"(attempt, tokens received, tokens kept): {short}"


def test_a_predict_answered_ok_is_committed_even_near_its_deadline(stub):
    """Found by the fuzzer: a Predict with a deadline of a few milliseconds is
    answered OK (result.steps 1) while the session keeps 0 steps: the client
    was told the step applied and it did not."""
    lost = []
    for attempt in range(300):
        sid = f"found-deadline-ok-{attempt:04d}"
        stub.CreateSession(pb.CreateSessionRequest(session_id=sid))
        try:
            reply = stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[0])),
                                 timeout=0.0005 + attempt % 6 * 0.0005)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
        else:
            if settled_steps(stub, sid) != reply.result.steps:
                lost.append(attempt)
        stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid))
    assert not lost, f"{len(lost)} OK replies whose step the session does not hold (attempts {lost[:10]})"


def _rich_details(error: grpc.RpcError):
    from google.rpc import status_pb2

    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"no grpc-status-details-bin: {error.details()}"
    return {d.TypeName().rsplit(".", 1)[-1] for d in status_pb2.Status.FromString(raw).details}


def test_every_invalid_argument_carries_bad_request_field_violations(channel, stub):
    """Found by the fuzzer: issue 10 asks for BadRequest field violations on
    INVALID_ARGUMENT; input validation, protobuf decoding and stream-protocol
    errors send ErrorInfo only."""
    sid = "found-bad-request-0001"
    stub.CreateSession(pb.CreateSessionRequest(session_id=sid))
    calls = {
        "empty input": lambda: stub.Predict(pb.PredictRequest(session_id=sid)),
        "tokens and text": lambda: stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[1], text="a"))),
        "token outside the vocabulary": lambda: stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[1, 999]))),
        "4097 tokens": lambda: stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[1] * 4097))),
        "prompt with tokens and text": lambda: stub.CreateSession(pb.CreateSessionRequest(
            prompt=pb.Input(tokens=[1], text="a"))),
        "corrupt protobuf": lambda: channel.unary_unary("/lstm.v1.LstmService/GetSession")(b"\xff\xff"),
        "stream without open": lambda: list(stub.Stream(iter([pb.StreamRequest(step=pb.StreamStep(
            input=pb.Input(tokens=[1])))]))),
    }
    missing = {}
    for what, call in calls.items():
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, info.value.code())
        kinds = _rich_details(info.value)
        if "BadRequest" not in kinds:
            missing[what] = sorted(kinds)
    stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid))
    assert not missing, f"INVALID_ARGUMENT without BadRequest: {missing}"
