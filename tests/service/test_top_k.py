"""top_k (service/core/sampling.py): the k largest log-probabilities of each row, largest
first, ties to the lower id, whichever way it is computed (rounds of argmax for small k
over a batch, a sort otherwise), checked against a full stable sort; each row's answer
is the one it gets alone and with any other k."""
from __future__ import annotations

import numpy as np
import pytest

from lstm_service.service.core.sampling import ARGMAX_MAX_K, log_softmax, top_k


def by_sorting(lp: np.ndarray, k: int):
    ids = np.argsort(-lp, axis=1, kind="stable")[:, :k]  # largest first, ties: lower id first
    return ids, np.take_along_axis(lp, ids, axis=1)


@pytest.mark.parametrize("rows", [1, 3, 64])
@pytest.mark.parametrize("k", [1, 5, ARGMAX_MAX_K, ARGMAX_MAX_K + 1, 256])
def test_top_k_equals_a_full_sort_and_each_row_alone(rows, k):
    rng = np.random.default_rng(rows * 1000 + k)
    logits = rng.standard_normal((rows, 256)).astype(np.float32) * 3
    logits[:, ::7] = np.round(logits[:, ::7])  # many exact ties
    lp = log_softmax(logits)
    ids, values = top_k(lp, k)
    want_ids, want_values = by_sorting(lp, k)
    assert ids.shape == values.shape == (rows, k) and ids.dtype == np.int64
    assert np.array_equal(values, want_values)
    assert np.array_equal(np.take_along_axis(lp, ids, axis=1), values)
    assert all(len(set(row)) == k for row in ids.tolist())
    assert np.array_equal(ids, want_ids)
    for r in range(rows):  # a row's answer does not depend on its batch-mates, nor on a larger k
        alone = top_k(lp[r:r + 1], k)
        assert np.array_equal(alone[0], ids[r:r + 1]) and np.array_equal(alone[1], values[r:r + 1])
        wider = top_k(lp[r:r + 1], 256)
        assert np.array_equal(wider[0][:, :k], ids[r:r + 1])


def test_rows_with_minus_infinity_or_nan_never_repeat_an_id_and_answer_as_alone():
    lp = np.full((3, 256), -np.inf, np.float32)
    lp[0, [4, 9]] = [-1.0, -2.0]  # two finite entries, five asked for
    lp[1, :] = np.linspace(-9, -1, 256, dtype=np.float32)
    lp[2, 3] = np.nan
    ids, values = top_k(lp, 5)
    assert all(len(set(row)) == 5 for row in ids.tolist())
    assert ids[0].tolist() == [4, 9, 0, 1, 2] and np.array_equal(ids[1], [255, 254, 253, 252, 251])
    for r in range(3):
        assert np.array_equal(top_k(lp[r:r + 1], 5)[0], ids[r:r + 1])
