"""A batch's logits -> each step's log-probabilities and top-k, computed on
the whole batch at once (log-softmax, argpartition and exp are one numpy
call each instead of one per step).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..api.values import Scores
from .sampling import log_softmax, top_k

__all__ = ["Scores", "score"]


def score(logits: np.ndarray, all_positions: List[bool], ks: List[int],
          lengths: Optional[List[int]] = None) -> List[Scores]:
    """logits [B, T, V] of one model call -> one Scores per row, each with its own k.

    ``lengths``: row b's valid positions are its first lengths[b] (a mixed batch, padded
    to its longest row); None: every row is T long."""
    b = logits.shape[0]
    k = max(ks)
    if not any(all_positions):
        last = logits[:, -1, :] if lengths is None else logits[np.arange(b), np.asarray(lengths) - 1, :]
        lp = log_softmax(last)  # [B, V]
        ids, vals = top_k(lp, k)
        probs = np.exp(vals)  # elementwise, so the same as per row
        if b == 1:
            return [Scores(lp, lp[0].copy(), ids, vals, probs)]
        # Rows are split off by list() on [B, 1, ...] views (in C, not a Python slice each).
        if ks.count(k) == b:  # one k for all (the usual case): no Python loop body at all
            return list(map(Scores, list(lp[:, None, :]), map(np.ndarray.copy, lp), list(ids[:, None, :]),
                            list(vals[:, None, :]), list(probs[:, None, :])))
        rows = zip(list(ids[:, None, :]), list(vals[:, None, :]), list(probs[:, None, :]))
        out = []
        for lp_row, last, (i, v, p), kk in zip(lp[:, None, :], map(np.ndarray.copy, lp), rows, ks):
            cut = (i[:, :kk], v[:, :kk], p[:, :kk]) if kk != k else (i, v, p)
            out.append(Scores(lp_row, last, *cut))
        return out
    parts, spans, start = [], [], 0
    for row, every in enumerate(all_positions):
        n = logits.shape[1] if lengths is None else lengths[row]
        part = logits[row, :n] if every else logits[row, n - 1:n]
        parts.append(part)
        spans.append((start, start + len(part)))
        start += len(part)
    lp = log_softmax(np.concatenate(parts))
    ids, vals = top_k(lp, k)
    probs = np.exp(vals)
    return [
        Scores(lp[a:z], lp[z - 1].copy(), ids[a:z, :kk], vals[a:z, :kk], probs[a:z, :kk])
        for (a, z), kk in zip(spans, ks)
    ]
