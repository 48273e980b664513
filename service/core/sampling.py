"""Log-probabilities, top-k and sampling with numpy (on whole batches where possible)."""
from __future__ import annotations

import secrets
from typing import Tuple

import numpy as np

from ..api.options import SamplingOptions


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of [N, V] (float32 in, float32 out)."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    total = np.exp(shifted).sum(axis=-1, keepdims=True)
    # The same operations as shifted - log(total), in place: two fewer temporaries.
    return np.subtract(shifted, np.log(total, out=total), out=shifted)


def top_k(logprobs: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of [N, V], largest first, ties: lower id first
    (also at the k-th place): (ids [N,k], values [N,k]). Every way below gives exactly
    that, so a row's answer does not depend on its batch-mates, N, or the k asked."""
    n, v = logprobs.shape
    k = min(k, v)
    if k <= 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), logprobs.dtype)
    if n == 1:  # one row: 1-D indexing is much cheaper
        row = logprobs[0]
        if k <= ARGMAX_MAX_K:
            left, picks = row.copy(), []
            for _ in range(k):
                i = int(left.argmax())
                picks.append(i)
                left[i] = -np.inf
            values = row[picks]
            if np.isfinite(values).all():  # else NaN or -inf: a masked entry may have come back
                return np.array(picks, np.int64)[None], values[None]
        ids = np.argsort(-row, kind="stable")[:k]
        return ids[None], row[ids][None]
    rows = np.arange(n)[:, None]
    if k <= ARGMAX_MAX_K:
        ids = _by_argmax(logprobs, k)
        values = logprobs[rows, ids]
        if np.isfinite(values).all():  # else NaN or -inf: a masked entry may have come back
            return ids, values
    ids = np.argsort(-logprobs, axis=1, kind="stable")[:, :k]
    return ids, logprobs[rows, ids]


# Up to this k, k rounds of argmax over a batch beat sorting each row (V=256, B=64, k=5:
# 27 µs; argpartition + argsort per row, the former way, 93 µs, with ties in argpartition's
# order rather than by id); one row, k=5: 1-D rounds, about as fast as the former way.
ARGMAX_MAX_K = 8


def _by_argmax(logprobs: np.ndarray, k: int) -> np.ndarray:
    """The ids of top_k by k rounds of argmax, each taking the largest left in every row
    (argmax returns the first of equals: ties go to the lower id)."""
    n = logprobs.shape[0]
    left, rows = logprobs.copy(), np.arange(n)
    ids = np.empty((n, k), np.int64)
    for j in range(k):
        ids[:, j] = pick = left.argmax(axis=1)
        left[rows, pick] = -np.inf
    return ids


class Sampler:
    """Draws tokens for one request; the same seed and inputs give the same tokens."""

    def __init__(self, options: SamplingOptions) -> None:
        self.options = options
        seed = options.seed if options.seed is not None else secrets.randbits(64)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def sample(self, logprobs: np.ndarray) -> int:
        """One token id from a [V] vector of log-probabilities."""
        o = self.options
        if o.temperature == 0.0:
            return int(np.argmax(logprobs))
        scores = logprobs.astype(np.float64) / o.temperature
        if 0 < o.top_k < scores.shape[0]:
            ids = np.argpartition(-scores, o.top_k - 1)[: o.top_k]
        else:
            ids = np.arange(scores.shape[0])
        ids = ids[np.argsort(-scores[ids], kind="stable")]
        probs = np.exp(scores[ids] - scores[ids[0]])
        probs /= probs.sum()
        if o.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), o.top_p)) + 1
            ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
        cdf = np.cumsum(probs)
        pick = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
        return int(ids[min(pick, len(ids) - 1)])
