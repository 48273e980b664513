"""A call's hold on a session (service/core/hold.py; docs/glossary.md),
driven directly on an in-process Engine (no gRPC): run computes and keeps nothing, commit swaps
the state in only while the call is live, release ends the hold, and a long input runs in
prefill chunks that give what one call gives."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from lstm_service.model.card import load_card
from lstm_service.service.proc.config import Config
from lstm_service.service.core.engine import Engine
from lstm_service.service.api.errors import CallEnded, FailedPrecondition, NotFound, SessionBusy
from lstm_service.service.api.options import StepOptions
from lstm_service.service.core.runtime import Runtime

TEXT = np.frombuffer(b"Now is the winter of our discontent", np.uint8).astype(np.int64)
OPTIONS = StepOptions(top_k=3)


@contextlib.contextmanager
def engine_for(model_dir, **overrides):
    config = Config(model=str(model_dir), device="cpu", inline_max_ms=0, **overrides)
    card = load_card(model_dir)
    engine = Engine(config, card, Runtime.from_config(card, config))
    try:
        yield engine
    finally:
        engine.close()


async def test_run_keeps_nothing_and_commit_swaps_the_new_state_in(tiny_model_dir):
    with engine_for(tiny_model_dir) as engine:
        session = engine.store.create("hold-commit-0001")
        hold = await engine.hold(session.id)
        before = session.state
        pending = await hold.run(TEXT[:5], OPTIONS)
        assert session.steps == 0 and session.state is before  # computed, not kept
        result = hold.commit(pending)
        hold.release()
        assert result.steps == session.steps == 5 and session.state is not before
        assert all(np.array_equal(a, b) for a, b in zip(session.state, pending.state))
        assert not any(part.flags.writeable for part in session.state)  # committed state is read-only


async def test_a_call_no_longer_live_commits_nothing(tiny_model_dir):
    with engine_for(tiny_model_dir) as engine:
        session = engine.store.create("hold-dead-call-1")
        hold = await engine.hold(session.id)
        pending = await hold.run(TEXT[:3], OPTIONS)
        with pytest.raises(CallEnded):
            hold.commit(pending, live=lambda: False)
        hold.release()
        assert session.steps == 0 and session.last_logprobs is None


async def test_one_hold_per_session_until_it_is_released(tiny_model_dir):
    with engine_for(tiny_model_dir) as engine:
        session = engine.store.create("hold-exclusive-1")
        hold = await engine.hold(session.id)
        with pytest.raises(SessionBusy):
            await engine.hold(session.id)
        hold.release()
        again = await engine.hold(session.id)
        again.release()
        assert not session.busy


async def test_expected_steps_ahead_of_the_session_refuse_before_anything_runs(tiny_model_dir):
    # Below the count (inside the journal) rewinds instead: tests/service/test_journal_rewind.py.
    with engine_for(tiny_model_dir) as engine:
        session = engine.store.create("hold-expected-01")
        hold = await engine.hold(session.id)
        hold.commit(await hold.run(TEXT[:4], OPTIONS))
        with pytest.raises(FailedPrecondition) as info:
            await hold.run(TEXT[4:6], OPTIONS, expected_steps=5)
        assert info.value.reason == "STEPS_MISMATCH" and info.value.metadata["steps"] == "4"
        assert session.steps == 4
        result = hold.commit(await hold.run(TEXT[4:6], OPTIONS, expected_steps=4))
        hold.release()
        assert result.steps == 6


async def test_prefill_chunks_give_what_one_call_gives(tiny_model_dir):
    every = StepOptions(top_k=2, all_positions=True)
    results = {}
    for chunk in (0, 4):  # 0: one model call for the whole input
        with engine_for(tiny_model_dir, prefill_chunk=chunk) as engine:
            session = engine.store.create("hold-prefill-001")
            hold = await engine.hold(session.id)
            results[chunk] = hold.commit(await hold.run(TEXT[:10], every))
            hold.release()
            results[chunk, "state"] = session.state
    whole, chunked = results[0].scores, results[4].scores
    assert chunked.logprobs.shape == whole.logprobs.shape == (10, 256)
    np.testing.assert_allclose(chunked.logprobs, whole.logprobs, atol=1e-5)
    for a, b in zip(results[4, "state"], results[0, "state"]):
        np.testing.assert_allclose(a, b, atol=1e-5)


async def test_start_runs_from_the_zero_state_and_the_commit_counts_from_zero(tiny_model_dir):
    with engine_for(tiny_model_dir) as engine:
        session = engine.store.create("hold-start-00001")
        hold = await engine.hold(session.id)
        hold.commit(await hold.run(TEXT[:7], OPTIONS))
        fresh = hold.commit(await hold.run(TEXT[:3], OPTIONS, start=True))
        hold.release()
        other = engine.store.create("hold-start-00002")
        hold = await engine.hold(other.id)
        plain = hold.commit(await hold.run(TEXT[:3], OPTIONS))
        hold.release()
        assert fresh.steps == session.steps == 3
        np.testing.assert_allclose(session.last_logprobs, other.last_logprobs, atol=1e-6)
        assert list(fresh.scores.top_ids[0]) == list(plain.scores.top_ids[0])


async def test_a_scratch_hold_scores_from_zero_and_keeps_nothing(tiny_model_dir):
    with engine_for(tiny_model_dir) as engine:
        hold = await engine.hold("")
        assert engine.scratch_active == 1
        result = hold.commit(await hold.run(TEXT[:3], OPTIONS))
        assert result.session_id == "" and result.steps == 3
        with pytest.raises(FailedPrecondition, match="no session"):
            _ = hold.info
        hold.release()
        assert engine.scratch_active == 0 and len(engine.store) == 0


async def test_a_hold_that_ends_its_session_on_release(tiny_model_dir):
    with engine_for(tiny_model_dir) as engine:
        session = engine.store.create("hold-ends-000001")
        hold = await engine.hold(session.id, end_on_release=True)
        hold.commit(await hold.run(TEXT[:2], OPTIONS))
        hold.release()
        with pytest.raises(NotFound):
            engine.store.get(session.id)


async def test_a_yielding_hold_gives_its_session_up_between_steps_and_takes_it_again(tiny_model_dir):
    """A KServe stream's hold (yielding=True): another call that asks between two steps gets the
    session as if nobody held it; between a run and its commit it is busy as any hold; the
    yielding hold's next run takes it again from the state the other call left."""
    with engine_for(tiny_model_dir) as engine:
        session = engine.store.create("hold-yielding-001")
        held = await engine.hold(session.id, yielding=True)
        held.commit(await held.run(TEXT[:2], OPTIONS))
        assert session.busy
        pending = await held.run(TEXT[2:3], OPTIONS)
        with pytest.raises(SessionBusy):  # run, not committed yet: never given up in between
            await engine.hold(session.id)
        held.commit(pending)
        other = await engine.hold(session.id)  # between steps: given up at once
        assert held.yielded and session.busy
        other.commit(await other.run(TEXT[3:5], OPTIONS))
        with pytest.raises(SessionBusy):  # the other call still holds it: refused as any hold is
            await held.run(TEXT[5:6], OPTIONS)
        other.release()
        result = held.commit(await held.run(TEXT[5:6], OPTIONS))  # taken again, after the other's steps
        assert result.steps == session.steps == 6 and not held.yielded
        with engine_for(tiny_model_dir) as alone:
            lone = alone.store.create("hold-yielding-002")
            hold = await alone.hold(lone.id)
            hold.commit(await hold.run(TEXT[:6], OPTIONS))
            assert all(np.array_equal(a, b) for a, b in zip(session.state, lone.state))
        # a delete between steps takes it too; the next run finds it gone
        await engine.delete_session(session.id)
        with pytest.raises(NotFound):
            await held.run(TEXT[6:7], OPTIONS)
        held.release()
        assert engine.store.busy == 0
