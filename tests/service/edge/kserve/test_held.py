"""A ModelStreamInfer stream keeps each sequence's session held between its requests
(service/edge/kserve/held.py) and gives it up to any other call that asks meanwhile: a
ModelInfer, an lstm.v1 Predict or DeleteSession, another stream. The official tritonclient
against a real server (both modes); each answer is what one onnxruntime run of all the
sequence's tokens gives, whichever call stepped it."""
import asyncio
import contextlib

import numpy as np
import pytest

tritonclient = pytest.importorskip("tritonclient.grpc.aio")  # the [dev] extra
from tritonclient.grpc import InferInput, InferRequestedOutput  # noqa: E402

from lstm_service.service.edge.kserve import held as held_module  # noqa: E402
from lstm_service.service.edge.kserve.sequence import session_id_for  # noqa: E402
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as lpb  # noqa: E402
from svc_helpers import serving  # noqa: E402

TOKENS = list(b"Good night, good night! Parting is such sweet sorrow")
OUT = [InferRequestedOutput("LOGPROBS")]


def ids_input(tokens) -> InferInput:
    x = InferInput("INPUT_IDS", [1, len(tokens)], "INT64")
    x.set_data_from_numpy(np.asarray(tokens, dtype=np.int64)[None, :])
    return x


class Stream:
    """One ModelStreamInfer stream driven a request at a time: ``send`` returns its answer."""

    def __init__(self, client, name: str) -> None:
        self.name = name
        self.queue: asyncio.Queue = asyncio.Queue()
        self.replies = client.stream_infer(self._requests()).__aiter__()

    async def _requests(self):
        while (request := await self.queue.get()) is not None:
            yield request

    async def send(self, tokens, sequence_id, **kw):
        await self.queue.put(dict(model_name=self.name, inputs=[ids_input(tokens)], sequence_id=sequence_id,
                                  outputs=OUT, **kw))
        return await self.replies.__anext__()

    async def close(self) -> None:
        await self.queue.put(None)
        async for _ in self.replies:
            pass


@contextlib.asynccontextmanager
async def stream_of(client, name):
    stream = Stream(client, name)
    try:
        yield stream
    finally:
        await stream.close()


def steps(result) -> int:
    return result.get_response().parameters["sequence_steps"].int64_param


async def busy(served, sequence_id) -> bool:
    await served.sync()
    got = await served.stub.GetSession(lpb.GetSessionRequest(session_id=session_id_for(sequence_id)))
    return got.session.busy


async def test_a_stream_holds_its_sequence_and_gives_it_to_any_other_call_between_requests(tiny_model_dir,
                                                                                           reference):
    want = reference.logprobs(TOKENS[:9])
    async with serving(tiny_model_dir) as s, tritonclient.InferenceServerClient(s.target) as client:
        name = s.app.card.name
        async with stream_of(client, name) as stream, stream_of(client, name) as other:
            result, error = await stream.send(TOKENS[:3], 7, sequence_start=True)
            assert error is None and steps(result) == 3
            result, error = await stream.send(TOKENS[3:4], 7)
            assert error is None and steps(result) == 4
            assert await busy(s, 7)  # held between requests, as an lstm.v1 stream holds its session
            # Each of these would be SESSION_BUSY if the hold were not given up.
            r = await client.infer(name, [ids_input(TOKENS[4:5])], sequence_id=7, outputs=OUT)
            assert steps(r) == 5
            p = await s.stub.Predict(lpb.PredictRequest(session_id=session_id_for(7),
                                                        input=lpb.Input(tokens=TOKENS[5:6])))
            assert p.result.steps == 6
            result, error = await other.send(TOKENS[6:7], 7)  # another stream: it holds it now
            assert error is None and steps(result) == 7
            result, error = await stream.send(TOKENS[7:9], 7)  # taken back from the other stream
            assert error is None and steps(result) == 9
            got = result.as_numpy("LOGPROBS")[0, -1]
            assert np.abs(got - want[-1]).max() <= 1e-4
            # a delete between requests is not refused either; the stream then finds the sequence gone
            await s.stub.DeleteSession(lpb.DeleteSessionRequest(session_id=session_id_for(7)))
            result, error = await stream.send(TOKENS[9:10], 7)
            assert result is None and error is not None
            assert "sequence 7 is not active" in error.message()
        await s.sync()
        assert s.engine.store.busy == 0  # nothing left held once the streams ended


async def test_the_hold_ends_with_the_stream_the_sequence_or_an_idle_second(tiny_model_dir, monkeypatch):
    async with serving(tiny_model_dir) as s, tritonclient.InferenceServerClient(s.target) as client:
        name = s.app.card.name
        async with stream_of(client, name) as stream:
            for sequence_id in (1, 2):
                await stream.send(TOKENS[:2], sequence_id, sequence_start=True)
                await stream.send(TOKENS[2:3], sequence_id)
            assert await busy(s, 1) and await busy(s, 2)
            result, error = await stream.send(TOKENS[3:4], 2, sequence_end=True)
            assert error is None and steps(result) == 4
            await s.sync()
            assert s.engine.session_count() == 1  # the ended sequence is freed
            assert await busy(s, 1)
        assert not await busy(s, 1)  # released when its stream ended; the session stays
        monkeypatch.setattr(held_module, "IDLE_RELEASE", 0.05)
        async with stream_of(client, name) as stream:
            await stream.send(TOKENS[3:4], 1)
            assert await busy(s, 1)
            for _ in range(200):  # released after IDLE_RELEASE without a step, the stream still open
                if not await busy(s, 1):
                    break
                await asyncio.sleep(0.02)
            assert not await busy(s, 1)
            result, error = await stream.send(TOKENS[4:5], 1)  # held again at its next step
            assert error is None and steps(result) == 5
            assert await busy(s, 1)


async def test_a_resend_with_expected_steps_applies_once_under_the_streams_hold(tiny_model_dir):
    """Exactly-once on the held path: a continue resent with expected_steps = the count seen
    before it is rewound there first (under the hold the stream keeps), so it applies once."""
    async with serving(tiny_model_dir) as s, tritonclient.InferenceServerClient(s.target) as client:
        async with stream_of(client, s.app.card.name) as stream:
            await stream.send(TOKENS[:3], "r", sequence_start=True)
            first, error = await stream.send(TOKENS[3:4], "r")
            assert error is None and steps(first) == 4 and await busy(s, "r")
            again, error = await stream.send(TOKENS[3:4], "r", parameters={"expected_steps": 3})
            assert error is None and steps(again) == 4
            assert np.array_equal(again.as_numpy("LOGPROBS"), first.as_numpy("LOGPROBS"))
            result, error = await stream.send(TOKENS[4:5], "r", parameters={"expected_steps": 9})
            assert result is None and "expected_steps" in error.message()  # ahead: refused, nothing changed
            result, error = await stream.send(TOKENS[4:5], "r", sequence_end=True, parameters={"expected_steps": 4})
            assert error is None and steps(result) == 5
        await s.sync()
        assert s.engine.session_count() == 0 and s.engine.store.busy == 0
