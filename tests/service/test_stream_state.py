"""State continuity and isolation through the real server: feeding a text in
pieces (Stream, Predict) gives what one onnxruntime call over the whole
text gives."""
import asyncio
import random

import grpc
import numpy as np
import pytest

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

from reference import Reference
from svc_helpers import open_stream, serving, stream_step

TEXT = "ROMEO: But soft, what light — through yonder window breaks?"
TOL = 1e-4


def ids_of(text: str) -> list:
    return list(text.encode("utf-8"))


async def test_stream_token_by_token_matches_one_run(tiny_model_dir, reference):
    ids = ids_of(TEXT)
    want = reference.logprobs(ids)
    async with serving(tiny_model_dir) as s:
        call, opened = await open_stream(s.stub)
        assert opened.steps == 0 and opened.busy
        for t, token in enumerate(ids):
            result = await stream_step(call, [token], logprobs=True, top_k=3)
            assert result.steps == t + 1 and result.consumed == 1
            (prediction,) = result.predictions
            got = np.array(prediction.logprobs)
            assert got.shape == (256,)
            assert np.abs(got - want[t]).max() <= TOL, f"position {t}"
            top = [c.token for c in prediction.top]
            assert top == list(np.argsort(-want[t], kind="stable")[:3])
            assert prediction.top[0].prob == pytest.approx(np.exp(want[t][top[0]]), abs=1e-5)
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        await s.sync()
        assert s.engine.runner.stats.inline_runs > 0  # a lone stream's steps skip the worker hop
        assert s.engine.session_count() == 0  # a stream-created, server-named session ends with its stream


async def test_stream_text_input_is_utf8_bytes(tiny_model_dir, reference):
    want = reference.logprobs(ids_of(TEXT))
    async with serving(tiny_model_dir) as s:
        call, _ = await open_stream(s.stub)
        first = await stream_step(call, text=TEXT[:20], logprobs=True, all_positions=True)
        rest = await stream_step(call, text=TEXT[20:], logprobs=True, all_positions=True)
        await call.done_writing()
    rows = [p.logprobs for p in first.predictions] + [p.logprobs for p in rest.predictions]
    assert [p.position for p in rest.predictions] == list(range(len(TEXT[20:].encode())))
    assert np.abs(np.array(rows) - want).max() <= TOL
    assert rest.steps == len(ids_of(TEXT))


async def test_predict_in_random_chunks_matches_one_run(tiny_model_dir, reference):
    rng = random.Random(7)
    ids = [rng.randrange(256) for _ in range(90)]
    want = reference.logprobs(ids)
    async with serving(tiny_model_dir) as s:
        created = await s.stub.CreateSession(pb.CreateSessionRequest())
        sid = created.session.id
        rows, at = [], 0
        while at < len(ids):
            n = rng.randint(1, 17)
            chunk = ids[at : at + n]
            response = await s.stub.Predict(
                pb.PredictRequest(session_id=sid, input=pb.Input(tokens=chunk),
                                  output=pb.OutputOptions(all_positions=True, logprobs=True)),
            )
            result = response.result
            assert result.consumed == len(chunk) and result.steps == at + len(chunk)
            rows += [p.logprobs for p in result.predictions]
            at += len(chunk)
        assert np.abs(np.array(rows) - want).max() <= TOL
        # The last prediction only, by default, with 5 candidates.
        last = (await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[65])))).result
        assert len(last.predictions) == 1 and len(last.predictions[0].top) == 5
        assert last.predictions[0].position == 0 and not last.predictions[0].logprobs


async def test_stateless_predict_keeps_nothing(tiny_model_dir, reference):
    ids = ids_of("stateless")
    async with serving(tiny_model_dir) as s:
        for _ in range(2):
            r = (await s.stub.Predict(pb.PredictRequest(input=pb.Input(tokens=ids),
                                                        output=pb.OutputOptions(logprobs=True)))).result
            assert r.session_id == "" and r.steps == len(ids)
            assert np.abs(np.array(r.predictions[0].logprobs) - reference.logprobs(ids)[-1]).max() <= TOL
        await s.sync()
        assert s.engine.session_count() == 0


async def test_32_interleaved_sessions_each_match_their_own_run(tiny_model_dir, reference):
    rng = random.Random(3)
    texts = [[rng.randrange(256) for _ in range(rng.randint(8, 24))] for _ in range(32)]

    async def drive(s, ids):
        call, _ = await open_stream(s.stub)
        rows, at = [], 0
        while at < len(ids):
            n = rng.randint(1, 4)
            result = await stream_step(call, ids[at : at + n], logprobs=True, all_positions=True)
            rows += [p.logprobs for p in result.predictions]
            at += n
            await asyncio.sleep(rng.random() * 0.002)
        await call.done_writing()
        return np.array(rows)

    async with serving(tiny_model_dir) as s:
        results = await asyncio.gather(*(drive(s, ids) for ids in texts))
        batcher = s.engine.runner.stats
    for ids, got in zip(texts, results):
        assert np.abs(got - reference.logprobs(ids)).max() <= TOL
    assert batcher.steps >= sum(len(t) for t in texts) // 4
    assert batcher.batches < batcher.steps, "concurrent sessions never shared a model call"


@pytest.mark.parametrize("cell", ["gru", "rnn", "peephole"])
async def test_other_cells_served(make_tiny_model, cell):
    model_dir = make_tiny_model(cell)
    ref = Reference(model_dir)
    ids = ids_of("to be or not")
    async with serving(model_dir) as s:
        models = (await s.stub.ListModels(pb.ListModelsRequest())).models
        assert models[0].cell == cell and models[0].has_cell_state == (cell == "peephole")
        call, _ = await open_stream(s.stub)
        rows = []
        for token in ids:
            rows.append((await stream_step(call, [token], logprobs=True)).predictions[0].logprobs)
        await call.done_writing()
        assert np.abs(np.array(rows) - ref.logprobs(ids)).max() <= TOL
        # a fork carries the state (no c for gru/rnn)
        created = await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(tokens=ids[:5])))
        fork = await s.stub.ForkSession(pb.ForkSessionRequest(session_id=created.session.id))
        r = await s.stub.Predict(pb.PredictRequest(session_id=fork.session.id, input=pb.Input(tokens=ids[5:]),
                                                   output=pb.OutputOptions(logprobs=True)))
        assert np.abs(np.array(r.result.predictions[0].logprobs) - ref.logprobs(ids)[-1]).max() <= TOL


async def test_int8_precision_serves(tiny_model_dir, reference):
    ids = ids_of("quantized")
    async with serving(tiny_model_dir, precision="int8") as s:
        model = (await s.stub.GetModel(pb.GetModelRequest())).model
        assert model.precision == "int8" and model.providers == ["CPUExecutionProvider"]
        r = await s.stub.Predict(pb.PredictRequest(input=pb.Input(tokens=ids), output=pb.OutputOptions(logprobs=True)))
        got = np.array(r.result.predictions[0].logprobs)
        assert np.isfinite(got).all() and abs(np.exp(got).sum() - 1) < 1e-3
