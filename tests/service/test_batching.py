"""Cross-session batching: many sessions through one ORT call give each
session exactly its own results; the queue is bounded."""
import asyncio
import random
import time

import grpc
import numpy as np

from lstm_service.model.card import load_card
from lstm_service.service.core.batch_runner import BatchRunner, StepRequest
from lstm_service.service.core.scheduler import Scheduler
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.core.runtime import Runtime
from svc_helpers import GatedRuntime, open_stream, same_state, serving, stream_step


def runtime_for(model_dir, mix=True):
    return Runtime.load(load_card(model_dir), "fp32", "cpu", mix=mix)


def Batcher(runtime, max_batch=64, **options):
    """A scheduler over a batch runner: the batching the engine builds."""
    return Scheduler(BatchRunner(runtime, max_batch), **options)


async def drive(batcher, runtime, chunks):
    """Feed one session's chunks through ``batcher``; log-prob rows after each chunk."""
    state = runtime.zero_state
    rows = []
    for chunk in chunks:
        out = await batcher.submit(StepRequest(np.array(chunk, np.int64), state, all_positions=True, top_k=3))
        state = out.state
        rows.append(out.scores.logprobs)
        assert out.scores.top_ids.shape == (len(chunk), 3)
    return np.concatenate(rows), state[0]


def session_chunks(rng, n_sessions):
    out = []
    for _ in range(n_sessions):
        ids = [rng.randrange(256) for _ in range(rng.randint(4, 12))]
        chunks, at = [], 0
        while at < len(ids):
            n = rng.choice([1, 1, 1, 2, 3, 4])  # 3 and 4 share a length bucket
            chunks.append(ids[at : at + n])
            at += n
        out.append(chunks)
    return out


async def test_64_sessions_batched_equal_unbatched(tiny_model_dir):
    rt = runtime_for(tiny_model_dir)
    sessions = session_chunks(random.Random(11), 64)
    unbatched = Batcher(rt, max_batch=1)
    want = [await drive(unbatched, rt, chunks) for chunks in sessions]
    assert unbatched.stats.batches == unbatched.stats.steps  # one session per call
    unbatched.close()

    gated = GatedRuntime(rt)
    batcher = Batcher(gated, max_batch=64)
    tasks = [asyncio.create_task(drive(batcher, gated, chunks)) for chunks in sessions]
    # Every session has queued its first step: the worker holds the first batch it took at the
    # gate (how many it took depends on when its thread woke), the rest wait behind it.
    await until(lambda: gated.entered.is_set() and batcher.depth + batcher.stats.max_dispatch == 64)
    queued = batcher.depth
    gated.gate.set()
    got = await asyncio.gather(*tasks)
    batcher.close()
    # The first batch and the steps queued behind it each went to the worker together.
    assert batcher.stats.max_dispatch >= max(queued, 32), "the queued steps did not go to the worker together"
    assert batcher.stats.max_seen > 20
    assert batcher.stats.batches < batcher.stats.steps / 2
    assert len({shape for shape in gated.shapes if shape[0] > 1}) > 1, "mixed lengths were never batched"
    assert batcher.stats.mixed > 0, "no call mixed lengths (the tiny LSTM's runtime mixes them)"
    for (want_rows, want_h), (got_rows, got_h) in zip(want, got):
        # Bitwise: the runtime batches (and mixes lengths) only where its probe showed that exact.
        assert np.array_equal(got_rows, want_rows)
        assert np.array_equal(got_h, want_h)


async def until(condition, timeout: float = 10.0) -> None:
    """Wait for ``condition()`` (the order of events, not a guess at how long they take)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.001)


async def test_distinct_lengths_run_as_separate_groups_where_the_runtime_does_not_mix(tiny_model_dir):
    rt = GatedRuntime(runtime_for(tiny_model_dir, mix=False))
    batcher = Batcher(rt, max_batch=64)
    first = asyncio.create_task(drive(batcher, rt, [[1]]))
    await until(rt.entered.is_set)  # the worker holds the first step at the gate
    tasks = [asyncio.create_task(drive(batcher, rt, [[5] * t])) for t in (1, 2, 2, 3, 1, 3, 3)]
    await until(lambda: batcher.depth == 7)
    rt.gate.set()
    await asyncio.gather(first, *tasks)
    batcher.close()
    assert rt.shapes[0] == (1, 1)
    assert sorted(rt.shapes[1:]) == [(2, 1), (2, 2), (3, 3)]


async def test_similar_lengths_share_one_call_where_the_runtime_mixes(tiny_model_dir):
    rt = GatedRuntime(runtime_for(tiny_model_dir))
    assert rt.mixes
    batcher = Batcher(rt, max_batch=64)
    first = asyncio.create_task(drive(batcher, rt, [[1]]))
    await until(rt.entered.is_set)
    tasks = [asyncio.create_task(drive(batcher, rt, [[5] * t])) for t in (1, 3, 40, 4, 4, 1, 33, 5, 8, 2)]
    await until(lambda: batcher.depth == 10)
    rt.gate.set()
    await asyncio.gather(first, *tasks)
    batcher.close()
    # Shortest first, one call per length bucket padded to its longest: 1 | 2 | 3-4 | 5-8 | 33-64.
    assert rt.shapes == [(1, 1), (2, 1), (1, 2), (3, 4), (2, 8), (2, 40)] and batcher.stats.mixed == 3


async def test_cancelled_step_is_dropped_before_it_runs(tiny_model_dir):
    rt = GatedRuntime(runtime_for(tiny_model_dir))
    batcher = Batcher(rt, max_batch=64)
    first = asyncio.create_task(drive(batcher, rt, [[1]]))
    await until(rt.entered.is_set)
    doomed = asyncio.create_task(drive(batcher, rt, [[2, 2, 2, 2]]))
    kept = asyncio.create_task(drive(batcher, rt, [[3]]))
    await until(lambda: batcher.depth == 2)
    doomed.cancel()
    rt.gate.set()
    await asyncio.gather(first, kept)
    batcher.close()
    assert (1, 4) not in rt.shapes and rt.shapes == [(1, 1), (1, 1)]


async def test_lone_steps_run_inline_only_when_alone(tiny_model_dir):
    rt = runtime_for(tiny_model_dir)
    callers = [1]
    batcher = Batcher(rt, max_batch=64, inline_max_ms=1000, active=lambda: callers[0])
    alone = await drive(batcher, rt, [[1], [2], [3, 4]])
    assert batcher.stats.inline_runs == 2  # the first run measures the cost, in the worker
    callers[0] = 2  # another stream is open: its steps may come any moment, so batch
    await drive(batcher, rt, [[1], [2]])
    assert batcher.stats.inline_runs == 2
    batcher.close()
    plain = Batcher(rt, max_batch=1)
    assert np.array_equal((await drive(plain, rt, [[1], [2], [3, 4]]))[0], alone[0])
    plain.close()


async def test_delay_never_applies_to_a_lone_stream(tiny_model_dir):
    rt = runtime_for(tiny_model_dir)
    batcher = Batcher(rt, max_batch=64, max_delay_ms=300)
    began = time.perf_counter()
    await drive(batcher, rt, [[1]] * 5)
    batcher.close()
    assert time.perf_counter() - began < 1.0, "a lone stream waited for a batch to fill"


async def test_delay_gathers_steps_once_load_is_seen(tiny_model_dir):
    rt = GatedRuntime(runtime_for(tiny_model_dir))
    batcher = Batcher(rt, max_batch=64, max_delay_ms=150)
    first = asyncio.create_task(drive(batcher, rt, [[1]]))
    await until(rt.entered.is_set)
    pair = [asyncio.create_task(drive(batcher, rt, [[2]])) for _ in range(2)]
    await until(lambda: batcher.depth == 2)
    rt.gate.set()
    await asyncio.gather(first, *pair)  # batches (1), then (2): load has been seen
    late = [asyncio.create_task(drive(batcher, rt, [[3]]))]
    await until(lambda: batcher.depth == 1)  # queued: the first waits out the delay for company
    late.append(asyncio.create_task(drive(batcher, rt, [[4]])))
    await asyncio.gather(*late)
    batcher.close()
    assert rt.shapes == [(1, 1), (2, 1), (2, 1)]


async def test_full_queue_is_resource_exhausted_and_changes_nothing(tiny_model_dir, reference):
    gated = GatedRuntime(runtime_for(tiny_model_dir))
    async with serving(tiny_model_dir, runtime=gated, queue_size=2, max_batch=1, inline_max_ms=0) as s:
        gated.gate.set()
        ids = {}
        for name in "abcd":
            created = await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text=f"{name}: hi")))
            ids[name] = created.session.id
        gated.gate.clear()
        gated.entered.clear()

        def predict(name):
            return s.stub.Predict(pb.PredictRequest(session_id=ids[name], input=pb.Input(text="!"),
                                                    output=pb.OutputOptions(logprobs=True)))

        running = asyncio.ensure_future(predict("a"))
        await asyncio.to_thread(gated.entered.wait, 5)  # a holds the worker
        queued = [asyncio.ensure_future(predict(n)) for n in "bc"]
        await until(lambda: s.engine.scheduler.depth == 2)
        before = s.state(ids["d"])
        try:
            await predict("d")
            raise AssertionError("a full queue accepted a step")
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue is full (2 steps waiting, --queue-size)" in err.details()
            assert int(dict(err.trailing_metadata())["retry-after-ms"]) >= 1
        assert same_state(s.state(ids["d"]), before)
        gated.gate.set()
        await asyncio.gather(running, *queued)
        r = (await predict("d")).result  # d goes on from where it was
        assert r.steps == len("d: hi!")
        want = reference.logprobs(list(b"d: hi!"))[-1]
        assert np.abs(np.array(r.predictions[0].logprobs) - want).max() <= 1e-4


async def test_64_streams_over_grpc_share_model_calls(tiny_model_dir, reference):
    rng = random.Random(5)
    texts = [bytes(rng.randrange(256) for _ in range(6)) for _ in range(64)]

    async def one(s, text):
        call, _ = await open_stream(s.stub)
        rows = [(await stream_step(call, [b], logprobs=True)).predictions[0].logprobs for b in text]
        await call.done_writing()
        return np.array(rows)

    gated = GatedRuntime(runtime_for(tiny_model_dir))
    async with serving(tiny_model_dir, runtime=gated, max_batch=64, inline_max_ms=0) as s:
        tasks = [asyncio.ensure_future(one(s, t)) for t in texts]
        batcher = s.engine.scheduler
        # The first steps hold the worker at the gate, the others (most of them) wait behind it.
        await until(lambda: gated.entered.is_set() and batcher.depth + batcher.stats.max_dispatch == 64)
        queued = batcher.depth
        gated.gate.set()
        got = await asyncio.gather(*tasks)
    for text, rows in zip(texts, got):
        assert np.abs(rows - reference.logprobs(list(text))).max() <= 1e-4
    assert batcher.stats.max_dispatch >= max(queued, 32) and batcher.stats.batches < batcher.stats.steps
