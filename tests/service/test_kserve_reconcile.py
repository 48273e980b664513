"""KServe sequences reconcile like lstm.v1 calls (service/edge/kserve/infer.py): each answer
carries the session's count (response parameter sequence_steps); a continue or end resent
with parameter expected_steps = that count applies exactly once (rewound in the journal
first); a resent end that had applied says so. The official tritonclient, a real server
(both modes)."""
import numpy as np
import pytest

tritonclient = pytest.importorskip("tritonclient.grpc.aio")  # the [dev] extra
from tritonclient.grpc import InferInput, InferRequestedOutput  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from lstm_service.service.edge.kserve.sequence import session_id_for  # noqa: E402
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as lpb  # noqa: E402
from svc_helpers import serving  # noqa: E402


def ids_input(tokens) -> InferInput:
    x = InferInput("INPUT_IDS", [1, len(tokens)], "INT64")
    x.set_data_from_numpy(np.asarray(tokens, dtype=np.int64)[None, :])
    return x


def steps(result) -> int:
    return result.get_response().parameters["sequence_steps"].int64_param


async def test_a_resent_continue_or_end_with_expected_steps_applies_once(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        name, sid = s.app.card.name, session_id_for(9)
        out = [InferRequestedOutput("LOGPROBS")]
        async with tritonclient.InferenceServerClient(s.target) as client:
            started = await client.infer(name, [ids_input([1, 2, 3])], sequence_id=9, sequence_start=True)
            assert steps(started) == 3
            first = await client.infer(name, [ids_input([4])], sequence_id=9, outputs=out)
            assert steps(first) == 4
            # the answer was in doubt: resent with the count seen before it, it applies once
            again = await client.infer(name, [ids_input([4])], sequence_id=9, outputs=out,
                                       parameters={"expected_steps": 3})
            assert steps(again) == 4 and np.array_equal(again.as_numpy("LOGPROBS"), first.as_numpy("LOGPROBS"))
            got = await s.stub.GetSession(lpb.GetSessionRequest(session_id=sid))
            assert got.session.steps == 4
            ended = await client.infer(name, [ids_input([5])], sequence_id=9, sequence_end=True,
                                       parameters={"expected_steps": 4})
            assert steps(ended) == 5
            with pytest.raises(InferenceServerException) as caught:  # a resent end learns it applied
                await client.infer(name, [ids_input([5])], sequence_id=9, sequence_end=True,
                                   parameters={"expected_steps": 4})
            assert "was ended by its KServe sequence" in caught.value.message()
            with pytest.raises(InferenceServerException) as caught:  # a start has no count to expect
                await client.infer(name, [ids_input([5])], sequence_id=9, sequence_start=True,
                                   parameters={"expected_steps": 0})
            assert "expected_steps" in caught.value.message()
