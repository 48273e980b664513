"""The engine driven directly, with no gRPC: a real tiny model through real
onnxruntime, checked against the plain onnxruntime reference. These are the
rules the servicer relies on: one writer per session, state committed only
when a call is live, expected_steps, Generate committing what it handed out.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from lstm_service.model.card import load_card
from lstm_service.service.proc.config import Config
from lstm_service.service.api.errors import CallEnded
from lstm_service.service.core.engine import Engine
from lstm_service.service.api.errors import FailedPrecondition, InvalidArgument, NotFound, SessionBusy
from lstm_service.service.api.options import StepOptions
from lstm_service.service.core.runtime import Runtime

TOL = 1e-4


@contextlib.contextmanager
def engine_for(model_dir, **overrides):
    config = Config(model=str(model_dir), device="cpu", **overrides)
    card = load_card(model_dir)
    engine = Engine(config, card, Runtime.from_config(card, config))
    try:
        yield engine
    finally:
        engine.close()


def snapshot(engine, session_id: str):
    """(steps, state, last_logprobs) straight from the engine's store (no call, no touch)."""
    session = engine.store.get(session_id)
    return session.steps, session.state, session.last_logprobs


def session(engine, session_id: str):
    return engine.store.info(engine.store.get(session_id))


def ids(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
async def test_steps_carry_state_like_one_long_call(make_tiny_model, cell):
    from reference import Reference

    model_dir = make_tiny_model(cell)
    reference = Reference(model_dir)
    with engine_for(model_dir) as engine:
        info, first = await engine.create(None, 0, ids("To be"), StepOptions(top_k=3))
        result = await engine.predict(info.id, ids(", or"), StepOptions(top_k=3, logprobs=True))
        assert (first.steps, result.steps) == (5, 9)
        want = reference.logprobs(b"To be, or")[-1]
        assert np.abs(result.scores.logprobs[-1] - want).max() <= TOL
        steps, state, last = snapshot(engine, info.id)
        assert steps == 9 and len(state) == len(load_card(model_dir).state_names)
        assert all(not part.flags.writeable for part in state) and np.array_equal(last, result.scores.last)


async def test_a_call_that_is_no_longer_live_commits_nothing(tiny_model_dir):
    with engine_for(tiny_model_dir) as engine:
        info, _ = await engine.create(None, 0, ids("abc"), StepOptions())
        before = snapshot(engine, info.id)
        with pytest.raises(CallEnded):
            await engine.predict(info.id, ids("def"), StepOptions(), live=lambda: False)
        after = snapshot(engine, info.id)
        assert after[0] == before[0] and all(a is b for a, b in zip(after[1], before[1]))
        assert not session(engine, info.id).busy  # the hold was released
        with pytest.raises(CallEnded):
            await engine.create("never-created-000001", 0, ids("x"), StepOptions(), live=lambda: False)
        with pytest.raises(NotFound):
            await engine.get_session("never-created-000001")


async def test_expected_steps_applies_at_most_once(tiny_model_dir):
    """The retry of a step that did apply rewinds to expected_steps (the journal) and applies it
    again from there: the session ends where one application left it, bitwise."""
    with engine_for(tiny_model_dir) as engine:
        info, _ = await engine.create(None, 0, ids("ab"), StepOptions())
        done = await engine.predict(info.id, ids("c"), StepOptions(logprobs=True), expected_steps=2)
        once = snapshot(engine, info.id)
        again = await engine.predict(info.id, ids("c"), StepOptions(logprobs=True), expected_steps=2)
        twice = snapshot(engine, info.id)
        assert done.steps == again.steps == twice[0] == 3
        assert all(np.array_equal(a, b) for a, b in zip(once[1], twice[1]))
        assert np.array_equal(done.scores.logprobs, again.scores.logprobs)
        with pytest.raises(FailedPrecondition) as refused:  # ahead of the session: nothing to rewind to
            await engine.predict(info.id, ids("c"), StepOptions(), expected_steps=4)
        assert refused.value.reason == "STEPS_MISMATCH"
        assert refused.value.metadata == {"steps": "3", "reachable_from": "2", "reachable_to": "3"}
        with pytest.raises(FailedPrecondition) as refused:  # before the journal's reach
            await engine.predict(info.id, ids("c"), StepOptions(), expected_steps=1)
        assert refused.value.reason == "OUTSIDE_JOURNAL" and session(engine, info.id).steps == 3


async def test_one_writer_at_a_time_and_oversize_replies_refused_before_running(tiny_model_dir):
    with engine_for(tiny_model_dir, max_reply_bytes=4096) as engine:
        info, _ = await engine.create(None, 0, None, StepOptions())
        hold = await engine.hold(info.id)
        with pytest.raises(SessionBusy):
            await engine.predict(info.id, ids("x"), StepOptions())
        with pytest.raises(InvalidArgument) as big:
            await hold.run(ids("y" * 64), StepOptions(top_k=5, all_positions=True, logprobs=True))
        assert big.value.reason == "REPLY_TOO_LARGE" and engine.runner.stats.batches == 0
        hold.release()
        assert session(engine, info.id).steps == 0 and not session(engine, info.id).busy


async def test_generate_commits_each_token_it_hands_out_and_stops_with_the_consumer(tiny_model_dir):
    with engine_for(tiny_model_dir) as engine:
        info, _ = await engine.create(None, 0, None, StepOptions())
        options = engine.generate_options(50, 1.0, 0, None, 7, [])
        taken = []
        async with contextlib.aclosing(engine.generate(info.id, ids("Hi"), options)) as tokens:
            async for g in tokens:
                taken.append(g.token)
                if len(taken) == 3:
                    break  # nothing is sampled after the consumer stops
        assert session(engine, info.id).steps == 2 + 3 and not session(engine, info.id).busy
        twin, _ = await engine.create(None, 0, None, StepOptions())
        replay = engine.generate(twin.id, ids("Hi"), engine.generate_options(3, 1.0, 0, None, 7, []))
        assert [g.token async for g in replay] == taken
        a, b = snapshot(engine, info.id), snapshot(engine, twin.id)
        assert a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))
