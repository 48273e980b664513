"""Chunked prefill (service/core/prefill.py) through the real scheduler, batch runner and
onnxruntime: a long input alone runs in --prefill-chunk chunks; while other sessions are
active its chunks shrink to BUSY_CHUNK tokens (so a decode step waits for a short call);
--prefill-chunk 0 stays one call; the results are bitwise those of one call."""
from __future__ import annotations

import numpy as np

from lstm_service.model.card import load_card
from lstm_service.service.api.options import StepOptions
from lstm_service.service.core.batch_runner import BatchRunner
from lstm_service.service.core.prefill import BUSY_CHUNK, run_chunked
from lstm_service.service.core.runtime import Runtime
from lstm_service.service.core.scheduler import Scheduler


async def test_chunks_shrink_while_others_are_active(tiny_model_dir):
    rt = Runtime.load(load_card(tiny_model_dir), "fp32", "cpu")
    ids = np.random.default_rng(0).integers(0, 256, 150).astype(np.int64)
    options = StepOptions(top_k=2, all_positions=True)
    scheduler = Scheduler(BatchRunner(rt, 64))
    seen = []

    async def submit(step):
        seen.append(len(step.tokens))
        return await scheduler.submit(step)

    try:
        whole, whole_state = await run_chunked(submit, ids, rt.zero_state, options, 0, lambda: True)
        assert seen == [150]  # 0: one call, busy or not
        seen.clear()
        alone, alone_state = await run_chunked(submit, ids, rt.zero_state, options, 64, lambda: False)
        assert seen == [64, 64, 22]
        seen.clear()
        busy = [True]

        def others_active():  # another session goes away after the third chunk
            busy[0] = len(seen) < 3
            return busy[0]

        shared, shared_state = await run_chunked(submit, ids, rt.zero_state, options, 64, others_active)
        assert seen == [BUSY_CHUNK] * 3 + [64, 150 - 3 * BUSY_CHUNK - 64]
    finally:
        scheduler.close()
    for scores, state in ((alone, alone_state), (shared, shared_state)):
        assert scores.logprobs.shape == (150, 256) and scores.top_ids.shape == (150, 2)
        assert np.array_equal(scores.logprobs, whole.logprobs)
        assert all(np.array_equal(a, b) for a, b in zip(state, whole_state))
