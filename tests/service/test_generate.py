"""Generate: reproducible with a seed, stop sequences, max tokens, the
session keeps what was generated, cancel and deadlines stop it."""
import asyncio

import grpc
import numpy as np
import pytest

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.api.options import SamplingOptions
from lstm_service.service.core.sampling import Sampler
from svc_helpers import serving

PROMPT = "ROMEO:"


async def generate(stub, session_id="", prompt=PROMPT, **sampling):
    request = pb.GenerateRequest(session_id=session_id, sampling=pb.SamplingParams(**sampling))
    if prompt:
        request.prompt.text = prompt
    return [r async for r in stub.Generate(request)]


async def test_seed_makes_generation_reproducible(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        a = await generate(s.stub, max_tokens=30, seed=42, temperature=1.0)
        b = await generate(s.stub, max_tokens=30, seed=42, temperature=1.0)
        c = await generate(s.stub, max_tokens=30, seed=43, temperature=1.0)
        assert [r.token for r in a] == [r.token for r in b]
        assert [r.token for r in a] != [r.token for r in c]
        assert len(a) == 30 and a[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert all(r.finish_reason == pb.FINISH_REASON_UNSPECIFIED for r in a[:-1])
        assert [r.steps for r in a] == list(range(len(PROMPT) + 1, len(PROMPT) + 31))
        assert b"".join(r.piece for r in a).decode("utf-8", "replace") == "".join(r.text for r in a)


async def test_generated_tokens_are_in_the_session_state(tiny_model_dir, reference):
    async with serving(tiny_model_dir) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text=PROMPT)))).session.id
        out = await generate(s.stub, sid, prompt=" O", max_tokens=12, seed=1, top_k=20, top_p=0.9)
        tokens = [r.token for r in out]
        history = list(PROMPT.encode()) + list(b" O") + tokens
        assert out[-1].steps == len(history) and out[0].session_id == sid
        want = reference.logprobs(history)
        # each token's reported log-prob is the model's, before sampling cuts
        for i, r in enumerate(out):
            assert r.logprob == pytest.approx(want[len(history) - len(tokens) - 1 + i][r.token], abs=1e-4)
        r = await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="!"),
                                                   output=pb.OutputOptions(logprobs=True)))
        assert np.abs(np.array(r.result.predictions[0].logprobs) - reference.logprobs(history + [33])[-1]).max() <= 1e-4
        # continuing a session without a new prompt samples from where it is
        more = await generate(s.stub, sid, prompt="", max_tokens=3, temperature=0)
        assert more[-1].steps == len(history) + 1 + 3


async def test_greedy_matches_the_reference_argmax(tiny_model_dir, reference):
    async with serving(tiny_model_dir) as s:
        out = await generate(s.stub, max_tokens=10, temperature=0)
    history = list(PROMPT.encode())
    for r in out:
        assert r.token == int(np.argmax(reference.logprobs(history)[-1]))
        history.append(r.token)


async def test_stop_sequence_stops_and_max_tokens_is_respected(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        free = await generate(s.stub, max_tokens=60, seed=5)
        data = b"".join(r.piece for r in free)
        assert len(free) == 60
        # pick an ASCII byte that occurs after the first few tokens, stop on it
        at = next(i for i in range(3, 60) if data[i] < 128)
        stop = chr(data[at])
        first = data.index(stop.encode())
        stopped = await generate(s.stub, max_tokens=60, seed=5, stop=["never-happens", stop])
        assert len(stopped) == first + 1  # the stop sequence is included
        assert stopped[-1].finish_reason == pb.FINISH_REASON_STOP
        assert b"".join(r.piece for r in stopped) == data[: first + 1]
        # a two-token stop sequence
        two = data[at : at + 2]
        if two.isascii():
            stopped = await generate(s.stub, max_tokens=60, seed=5, stop=[two.decode()])
            assert b"".join(r.piece for r in stopped).endswith(two)
            assert stopped[-1].finish_reason == pb.FINISH_REASON_STOP
        assert len(await generate(s.stub, max_tokens=7, seed=5)) == 7
        assert len(await generate(s.stub, seed=5)) == 64  # the default


async def test_cancel_stops_generation_and_frees_the_session(tiny_model_dir):
    async with serving(tiny_model_dir, max_generate_tokens=4096) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text=PROMPT)))).session.id
        call = s.stub.Generate(pb.GenerateRequest(session_id=sid, sampling=pb.SamplingParams(max_tokens=4096)))
        received = [await call.read() for _ in range(5)]
        assert s.session(sid).busy
        call.cancel()
        # The server has ended the call (its generator closed) and the engine has let the session go:
        # from here nothing of that generation can be committed.
        assert await s.requests_counted("Generate", "CANCELLED", 1) == 1
        await released(s, sid)
        steps = s.session(sid).steps
        assert len(PROMPT) + len(received) <= steps < len(PROMPT) + 4096, "generation went on after cancel"
        await still_at(s, sid, steps)


async def test_deadline_exceeded_stops_generation(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text=PROMPT)))).session.id
        call = s.stub.Generate(pb.GenerateRequest(session_id=sid, sampling=pb.SamplingParams(max_tokens=4096)),
                               timeout=0.2)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await s.requests_counted("Generate", "DEADLINE_EXCEEDED", 1) == 1
        await released(s, sid)
        steps = s.session(sid).steps
        assert steps < len(PROMPT) + 4096
        await still_at(s, sid, steps)  # and the session is usable again


async def released(s, sid: str, timeout: float = 5.0) -> None:
    """Until the engine has let the session go (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while s.session(sid).busy:
        assert asyncio.get_running_loop().time() < deadline, f"session {sid} still held after {timeout:g}s"
        await asyncio.sleep(0.01)


async def still_at(s, sid: str, steps: int) -> None:
    """The session has ``steps`` and takes a new step on top of them (expected_steps is checked under
    the session's hold, so nothing the ended generation made can slip in after the read)."""
    reply = await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="x"), expected_steps=steps))
    assert reply.result.steps == steps + 1


def test_sampler_options():
    logprobs = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))

    def draws(**o):
        return [Sampler(SamplingOptions(seed=s, **o)).sample(logprobs) for s in range(300)]

    assert set(draws(temperature=0.0)) == {0}
    assert set(draws(top_k=2)) == {0, 1}
    assert set(draws(top_p=0.7)) == {0, 1}  # 0.5 + 0.3 reaches 0.7
    assert set(draws(top_p=0.5)) == {0}
    assert set(draws()) == {0, 1, 2, 3}
    hot = draws(temperature=5.0)
    cold = draws(temperature=0.2)
    assert hot.count(0) < cold.count(0)
