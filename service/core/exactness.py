"""Load-time probes: which ways of running a batch give each row exactly (bitwise) what
it gives alone, on this model, precision and provider.

    lone_rows_exact(run, rt)       # a row alone (B=1) == the same row inside a batch
    mixed_rows_exact(run, rt)      # rows of different lengths in one call (sequence_lens) == each alone
    same_results(run_a, run_b, rt) # two sessions (1 and 2 intra-op threads) agree on every output

``run(tokens [B,T], state, lengths [B] or None) -> (logits [B,T,V], state)``. The
probes feed seeded random tokens and states; the runtime uses a way of batching only
where its probe passed. Why probe instead of trusting the kernels: onnxruntime's
CPU RNN op takes a different GEMM path for one row than for several (last bits
differ), the int8 model's dynamic quantization scales over the whole batch, and a
GPU kernel may do either; what is exact is a fact of the kernels, so it is measured.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

Run = Callable[[np.ndarray, Tuple[np.ndarray, ...], Optional[np.ndarray]], Tuple[np.ndarray, Tuple[np.ndarray, ...]]]

LENGTHS = (1, 5, 2, 1, 5, 3)  # a decode step, prefill chunks, and the longest row more than once


def _inputs(rt, lengths: Sequence[int], seed: int) -> Tuple[List[np.ndarray], List[Tuple[np.ndarray, ...]]]:
    rng = np.random.default_rng(seed)
    layers, hidden = rt.state_shape
    tokens = [rng.integers(0, rt.card.vocab_size, n).astype(np.int64) for n in lengths]
    states = [tuple((rng.standard_normal((layers, hidden)) * 0.5).astype(np.float32) for _ in rt.card.state_names)
              for _ in lengths]
    return tokens, states


def _batch(tokens: List[np.ndarray], states: List[Tuple[np.ndarray, ...]]):
    width = max(len(t) for t in tokens)
    ids = np.zeros((len(tokens), width), np.int64)
    for i, t in enumerate(tokens):
        ids[i, :len(t)] = t
    state = tuple(np.stack([s[p] for s in states], axis=1) for p in range(len(states[0])))
    return ids, state, np.array([len(t) for t in tokens], np.int32)


def _row_equal(alone, batch, i: int, n: int) -> bool:
    logits, state = alone
    return (np.array_equal(logits[0, :n], batch[0][i, :n])
            and all(np.array_equal(a[:, 0], b[:, i]) for a, b in zip(state, batch[1])))


def _alone(run: Run, tokens: np.ndarray, state: Tuple[np.ndarray, ...], lengths: bool):
    return run(tokens[None, :], tuple(part[:, None, :] for part in state),
               np.array([len(tokens)], np.int32) if lengths else None)


def lone_rows_exact(run: Run, rt, lengths: bool = False, copies: int = 1) -> bool:
    """Each row of a batch of equal lengths is what it is when run alone (``copies`` > 1:
    alone as that many copies of itself)."""
    tokens, states = _inputs(rt, (3, 3, 3), seed=1)
    ids, state, lens = _batch(tokens, states)
    batch = run(ids, state, lens if lengths else None)
    for i, (t, s) in enumerate(zip(tokens, states)):
        ids1, state1, lens1 = _batch([t] * copies, [s] * copies)
        if not _row_equal(run(ids1, state1, lens1 if lengths else None), batch, i, len(t)):
            return False
    return True


def mixed_rows_exact(run: Run, rt) -> bool:
    """Each row of a batch of different lengths (padded, with sequence_lens) is what it is alone."""
    tokens, states = _inputs(rt, LENGTHS, seed=2)
    ids, state, lens = _batch(tokens, states)
    batch = run(ids, state, lens)
    return all(_row_equal(_alone(run, t, s, True), batch, i, len(t)) for i, (t, s) in enumerate(zip(tokens, states)))


def same_results(run_a: Run, run_b: Run, rt, lengths: bool) -> bool:
    """Both runs give bitwise the same outputs on a large one-token batch and a mixed one."""
    shapes = [(1,) * 64, (2,) * 16] + ([LENGTHS * 3] if lengths else [])
    for seed, shape in enumerate(shapes):
        tokens, states = _inputs(rt, shape, seed=10 + seed)
        ids, state, lens = _batch(tokens, states)
        a = run_a(ids, state, lens if lengths else None)
        b = run_b(ids, state, lens if lengths else None)
        if not (np.array_equal(a[0], b[0]) and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))):
            return False
    return True
