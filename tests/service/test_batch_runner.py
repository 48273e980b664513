"""The batch runner, driven directly (no server): it gathers each state part's
rows into a reused buffer, and each run must still see exactly
np.stack(rows, axis=1) whatever the batch sizes before it; rows of mixed
dtypes are promoted as np.stack does; each step gets its own state copy."""
from __future__ import annotations

import numpy as np

from lstm_service.service.core.batch_runner import BatchRunner, StepRequest


class Recorder:
    """A stand-in for the model (the runner is under test, not the model): h+1, c-1."""

    def __init__(self) -> None:
        self.seen = []

    def run(self, tokens, state):
        h, c = state
        self.seen.append((tokens.copy(), h.copy(), c.copy(), h.dtype, c.dtype))
        b = tokens.shape[0]
        return np.zeros((b, tokens.shape[1], 8), np.float32), (h + 1, c - 1)


def test_gathered_state_equals_np_stack_across_batch_sizes():
    rng = np.random.default_rng(0)
    rt = Recorder()
    runner = BatchRunner(rt, max_batch=8)
    for b in (8, 3, 8, 2, 5):
        hs = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(b)]
        cs = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(b)]
        toks = [rng.integers(0, 8, 3) for _ in range(b)]
        outs = runner.run_group([StepRequest(t, (h, c), False, 2) for t, h, c in zip(toks, hs, cs)])
        tokens, h, c, _, _ = rt.seen[-1]
        assert np.array_equal(tokens, np.stack(toks))
        assert np.array_equal(h, np.stack(hs, axis=1)) and np.array_equal(c, np.stack(cs, axis=1))
        for i, out in enumerate(outs):  # own copies, not views of a reused buffer
            new_h, new_c = out.state
            assert new_h.flags.owndata and np.array_equal(new_h, hs[i] + 1)
            assert new_c.flags.owndata and np.array_equal(new_c, cs[i] - 1)
            assert np.array_equal(out.scores.top_probs, np.exp(out.scores.top_logprobs))
    mixed = [np.ones((2, 4), np.float32), np.ones((2, 4), np.float64)]
    runner.run_group([StepRequest(np.array([1]), (m, m), False, 1) for m in mixed])
    assert rt.seen[-1][3] == np.float64 and rt.seen[-1][4] == np.float64
    assert runner.stats.batches == 6 and runner.stats.max_seen == 8


def test_groups_by_length_and_a_failing_group_fails_alone():
    class FailsOnLength3(Recorder):
        def run(self, tokens, state):
            if tokens.shape[1] == 3:
                raise RuntimeError("onnxruntime node X failed")
            return super().run(tokens, state)

    runner = BatchRunner(FailsOnLength3(), max_batch=8)
    z = np.zeros((2, 4), np.float32)
    steps = [StepRequest(np.arange(t), (z, z), False, 1) for t in (1, 3, 1, 2)]
    outs = runner.execute(steps)
    assert [type(o).__name__ for o in outs] == ["StepOutput", "ServiceError", "StepOutput", "StepOutput"]
    assert "onnxruntime" not in outs[1].message and "node X" in outs[1].detail  # internals logged, never sent
    assert runner.stats.batches == 2  # T=1 (two steps) and T=2; T=3 failed


def test_shorter_groups_are_answered_first_without_waiting_for_the_rest():
    runner = BatchRunner(Recorder(), max_batch=8)
    z = np.zeros((2, 4), np.float32)
    steps = [StepRequest(np.arange(t), (z, z), False, 1) for t in (64, 1, 8, 1)]
    heard = []
    outs = runner.execute(steps, on_group=lambda indices, results: heard.append((list(indices), len(results))))
    assert heard == [([1, 3], 2), ([2], 1)]  # T=1 first, then T=8; T=64 (the last) comes back with the return
    assert all(o is not None for o in outs) and [len(s.tokens) for s in steps] == [64, 1, 8, 1]
