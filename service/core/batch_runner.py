"""Run a batch of steps from different sessions through the model: the pure
part of batching (Triton python_backend's shape: execute(requests) -> responses).

    outputs = runner.execute([StepRequest(tokens[T], state, all_positions, k), ...])

Where the runtime mixes lengths (``runtime.mixes``: the recurrent ops take
``sequence_lens``, and a load-time probe showed padded rows are bitwise what they
are alone; service/core/runtime.py), steps of similar lengths share a call, padded
to the longest: one call per length bucket (1, 2, 3-4, 5-8, 9-16, ...; at most 2x
padding). Elsewhere steps are grouped by exact length T (no padding). Calls run
shortest first, and each call's steps are answered as soon as it is done, so a
one-token step is answered before a prefill chunk beside it runs. Why not one
call for everything: a call takes as many time steps as its longest row, so a
decode step padded into a 16-token chunk's call waits for all 16 steps (measured
with ``python -m bench --noisy``: the victim's p50 rise beside eight looping
prompts was about twice that of decode steps first). For a call, each part of
the state (h, and c where the cell has one) is gathered into [L, B, H], the model
runs, the scores are computed on the whole batch (service/core/scoring.py) and
each step gets its own copy of its new state rows.
No asyncio here: the scheduler calls ``execute`` on its worker thread (or,
for a lone cheap step, on the event loop).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from ..api.errors import ServiceError
from ..proc import budget
from .scoring import Scores, score

State = Tuple[np.ndarray, ...]  # one session: [L, H] per part, in the card's state_names order



def bucket(length: int) -> int:
    """The length bucket a step of ``length`` tokens shares a mixed call in: 1 | 2 | 3-4 | 5-8 | 9-16 | ..."""
    return (length - 1).bit_length()


@dataclass(eq=False)
class StepRequest:
    tokens: np.ndarray  # [T] int64
    state: State
    all_positions: bool
    top_k: int


@dataclass(eq=False)
class StepOutput:
    scores: Scores  # log-probs and top-k of the positions asked for
    state: State  # the new state (own copies: a view would pin the whole batch)

    @property
    def last(self) -> np.ndarray:
        return self.scores.last


@dataclass
class BatchStats:
    """Counters the benchmark and tests read: model calls, steps run, the
    largest model call, the largest hand-over to the worker, lone steps run inline, mixed calls."""

    batches: int = 0
    steps: int = 0
    max_seen: int = 0
    max_dispatch: int = 0
    inline_runs: int = 0
    mixed: int = 0  # model calls that held steps of different lengths
    wakeups: int = 0  # times the loop woke the sleeping worker (service/core/scheduler.py)
    handoffs: int = 0  # times the worker woke the loop with results


class BatchRunner:
    def __init__(self, runtime, max_batch: int = 64, metrics=None) -> None:
        self.runtime = runtime
        self.max_batch = max_batch
        self.metrics = metrics
        self.stats = BatchStats()
        self.token_seconds: Optional[float] = None  # moving average of a lone step's model time per token
        self._buffers = threading.local()  # per thread: reused gather buffers, one per state part

    def execute(self, steps: List[StepRequest],
                on_group: Optional[Callable[[List[int], list], None]] = None) -> List[Union[StepOutput, ServiceError]]:
        """One output per step, in order; a group whose model call fails gets the error.

        Groups run shortest first, and ``on_group(indices, outputs)`` hears of each but the
        last as soon as it is done: a one-token step batched beside a long prefill chunk is
        answered before the chunk runs, not after it. (The last group's outputs come back
        with the return value, after which the worker counts as idle again.)"""
        outputs: list = [None] * len(steps)
        ordered = self.calls([len(step.tokens) for step in steps])
        for n, indices in enumerate(ordered):
            try:
                results: list = self.run_group([steps[i] for i in indices])
            except Exception as exc:  # noqa: BLE001 - one bad group does not fail the others
                results = [ServiceError("model run failed", detail=f"{type(exc).__name__}: {exc}")] * len(indices)
            for i, result in zip(indices, results):
                outputs[i] = result
            if on_group is not None and n < len(ordered) - 1:
                on_group(indices, results)
        return outputs

    def calls(self, lengths: List[int]) -> List[List[int]]:
        """The steps (indices) of each model call, in the order they run: shortest first."""
        groups: Dict[int, List[int]] = {}
        for i, n in enumerate(lengths):
            groups.setdefault(n, []).append(i)
        ordered = [indices for _, indices in sorted(groups.items())]
        if not getattr(self.runtime, "mixes", False) or len(ordered) < 2:
            return ordered
        buckets: Dict[int, List[int]] = {}
        for indices in ordered:
            buckets.setdefault(bucket(lengths[indices[0]]), []).extend(indices)
        return [buckets[k] for k in sorted(buckets)]

    def run_group(self, steps: List[StepRequest]) -> List[StepOutput]:
        """Steps through one model call (of one length T, or of several where the runtime mixes them)."""
        b = len(steps)
        mark = budget.start()  # the cost timers (proc/budget.py), None when off
        lengths = [len(s.tokens) for s in steps]
        width = max(lengths)
        mixed = min(lengths) != width
        if b == 1:  # views, no copies
            tokens = steps[0].tokens[None, :]
            state = tuple(part[:, None, :] for part in steps[0].state)
        else:
            if mixed:  # padded to the longest row; sequence_lens tells the model where each row ends
                tokens = np.zeros((b, width), np.int64)
                for row, s in enumerate(steps):
                    tokens[row, :len(s.tokens)] = s.tokens
            else:  # one concatenate (same T) instead of np.stack's per-array Python work
                tokens = np.concatenate([s.tokens for s in steps]).reshape(b, -1)  # [B, T]
            state = tuple(self._gather(i, [s.state[i] for s in steps]) for i in range(len(steps[0].state)))
        budget.add("ort.gather", mark, b)
        mark = budget.start()
        started = time.perf_counter()
        if mixed:
            logits, new_state = self.runtime.run(tokens, state, np.array(lengths, np.int32))
        else:
            logits, new_state = self.runtime.run(tokens, state)
        self._count(b, width, time.perf_counter() - started, mixed)
        budget.add("ort.run", mark, b)
        mark = budget.start()
        scores = score(logits, [s.all_positions for s in steps], [s.top_k for s in steps],
                       lengths if mixed else None)
        budget.add("ort.score", mark, b)
        mark = budget.start()
        if b == 1:
            outputs = [StepOutput(scores[0], tuple(part[:, 0, :].copy() for part in new_state))]
        else:
            # Rows split off by list() on [B, L, H] views (in C, not a Python slice each).
            per_step = zip(*(map(np.ndarray.copy, part.transpose(1, 0, 2)) for part in new_state))
            outputs = list(map(StepOutput, scores, per_step))
        budget.add("ort.split", mark, b)
        return outputs

    def _count(self, b: int, t: int, seconds: float, mixed: bool = False) -> None:
        if b == 1:
            per_token = seconds / t
            last = self.token_seconds
            self.token_seconds = per_token if last is None else 0.9 * last + 0.1 * per_token
        if self.metrics:
            self.metrics.ort_run(b, t, seconds)
        stats = self.stats
        stats.batches += 1
        stats.steps += b
        stats.max_seen = max(stats.max_seen, b)
        stats.mixed += mixed

    def _gather(self, which: int, rows: List[np.ndarray]) -> np.ndarray:
        """np.stack(rows, axis=1) into a reused [L, B, H] buffer (rows of mixed dtypes: a fresh one).

        A fresh array of this size comes from mmap and is page-faulted in on every
        batch, which cost more than the gather itself. Reuse is safe: onnxruntime
        only reads its inputs during ``run`` and returns fresh output arrays, and
        one thread runs one group at a time. The rows go first into a [B*L, H]
        buffer by one concatenate, then transposed into place by one copy: np.stack
        does Python work per row (B=64: 33 -> 23 µs, B=8: 6.5 -> 3.9 µs).
        """
        row, b = rows[0], len(rows)
        layers, hidden = row.shape
        buffers: Dict[int, np.ndarray] = self._buffers.__dict__.setdefault("by_part", {})
        size = layers * b * hidden
        buf = buffers.get(which)
        if buf is None or buf.size < 2 * size or buf.dtype != row.dtype:
            buf = buffers[which] = np.empty(2 * max(size, row.size * self.max_batch), row.dtype)
        flat = buf[:size].reshape(b * layers, hidden)
        out = buf[size:2 * size].reshape(layers, b, hidden)
        try:
            np.concatenate(rows, axis=0, out=flat, casting="no")
        except TypeError:
            return np.stack(rows, axis=1)
        np.copyto(out, flat.reshape(b, layers, hidden).transpose(1, 0, 2))
        return out
