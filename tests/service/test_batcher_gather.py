"""The batcher gathers h/c rows into a reused buffer: each run must still see
exactly np.stack(rows, axis=1), whatever the batch sizes before it, and rows
of mixed dtypes are promoted as np.stack does."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from lstm_service.service.batcher import Batcher, Step


class Recorder:
    card = SimpleNamespace(has_cell_state=True)

    def __init__(self) -> None:
        self.seen = []

    def run(self, tokens, h, c):
        self.seen.append((tokens.copy(), h.copy(), c.copy(), h.dtype, c.dtype))
        b = tokens.shape[0]
        return np.zeros((b, tokens.shape[1], 8), np.float32), h + 1, c - 1


def test_gathered_state_equals_np_stack_across_batch_sizes():
    rng = np.random.default_rng(0)
    rt = Recorder()
    batcher = Batcher(rt, max_batch=8)
    try:
        for b in (8, 3, 8, 2, 5):
            hs = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(b)]
            cs = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(b)]
            toks = [rng.integers(0, 8, 3) for _ in range(b)]
            outs = batcher._run_group([Step(t, h, c, False, 2, None) for t, h, c in zip(toks, hs, cs)])
            tokens, h, c, _, _ = rt.seen[-1]
            assert np.array_equal(tokens, np.stack(toks))
            assert np.array_equal(h, np.stack(hs, axis=1)) and np.array_equal(c, np.stack(cs, axis=1))
            for i, out in enumerate(outs):  # own copies, not views of a reused buffer
                assert out.h.flags.owndata and np.array_equal(out.h, hs[i] + 1)
                assert out.c.flags.owndata and np.array_equal(out.c, cs[i] - 1)
                assert np.array_equal(out.top_probs, np.exp(out.top_logprobs))
        mixed = [np.ones((2, 4), np.float32), np.ones((2, 4), np.float64)]
        batcher._run_group([Step(np.array([1]), m, m, False, 1, None) for m in mixed])
        assert rt.seen[-1][3] == np.float64 and rt.seen[-1][4] == np.float64
    finally:
        batcher.close()
