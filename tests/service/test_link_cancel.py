"""A call cut off by its deadline lets its session go at once, so the client's retry finds it
free. Found by `make fuzz` in front + engine mode: the front released the lease only when the
engine's late reply came back, and the retry, faster, got ABORTED (SESSION_BUSY). Runs in
both modes; `make test-fronts` runs it across the link."""
from __future__ import annotations

import grpc

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from svc_helpers import serving

PROMPT = "Now is the winter of our discontent"


async def test_a_retry_after_a_deadline_never_finds_the_session_busy(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest())).session.id
        steps, cut_off = 0, 0
        for i in range(60):
            request = pb.PredictRequest(session_id=sid, input=pb.Input(text=PROMPT), expected_steps=steps)
            try:
                await s.stub.Predict(request, timeout=0.0002 * (1 + i % 10))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc.details()
                cut_off += 1
            # The retry, at once, as a client does after a lost reply.
            try:
                reply = await s.stub.Predict(request, timeout=10)
                steps = reply.result.steps
            except grpc.aio.AioRpcError as exc:  # the cut-off call was kept after all (a late commit)
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, (exc.code(), exc.details())
                steps = (await s.stub.GetSession(pb.GetSessionRequest(session_id=sid))).session.steps
        assert cut_off > 0, "no call was cut off: the deadlines did not test anything"
