"""Cross-session batching: steps that are ready at the same moment run as one
onnxruntime call.

    out = await batcher.run(tokens[T], h[L,H], c[L,H] | None, all_positions, top_k)

Steps queue on the event loop. Whenever the worker thread is idle and
something is queued, everything queued (up to max_batch) goes to the
worker at once: grouped by length T (one ORT call per distinct T; no
padding, so results are exact), h and c rows gathered into [L,B,H], run,
log-softmax and top-k computed on the whole batch, new rows copied out.
Results are delivered on the loop. While a batch runs, new steps
accumulate, so batches form from load alone ("continuous batching").
Nothing waits when the worker is idle, except when ``max_delay_ms`` > 0,
the previous batch had more than one step and some active caller has not
queued a step yet: then it waits up to that long for a full batch or a
step from every active caller. One lone stream never waits; with many
closed-loop streams this avoids alternating tiny and big batches.

One exception to "ORT runs in the worker": a lone step (one active caller,
nothing running or queued, the previous batch a single step) whose
measured cost is at most ``inline_max_ms`` runs on the loop thread. The
two thread hops (loop -> worker -> loop) cost 0.1-0.4 ms on a busy 2-core
machine, more than a small model's step; as soon as several callers are
active, steps batch in the worker.

The queue is bounded: beyond ``queue_size`` waiting steps ``run`` raises
ResourceExhausted with a retry hint and the step is not taken. A step
whose caller is cancelled before its batch starts is dropped; the caller
commits nothing either way, so session state only changes when the
caller receives a result.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional

import numpy as np

from .errors import ResourceExhausted, ServiceError
from .sampling import log_softmax, top_k


@dataclass(eq=False)
class Step:
    tokens: np.ndarray  # [T] int64
    h: np.ndarray  # [L, H]
    c: Optional[np.ndarray]  # [L, H] or None
    all_positions: bool
    top_k: int
    future: "asyncio.Future[StepOutput]"


@dataclass(eq=False)
class StepOutput:
    logprobs: np.ndarray  # [P, V]: P = T with all_positions, else 1
    last: np.ndarray  # [V] log-probs after the last token (own copy, for the session)
    top_ids: np.ndarray  # [P, k], most likely first
    top_logprobs: np.ndarray  # [P, k]
    top_probs: np.ndarray  # [P, k]: exp(top_logprobs), computed once per batch
    h: np.ndarray  # [L, H] new state (own copy)
    c: Optional[np.ndarray]


class Batcher:
    def __init__(
        self,
        runtime,
        max_batch: int = 64,
        max_delay_ms: float = 0.0,
        queue_size: int = 1024,
        metrics=None,
        inline_max_ms: float = 0.0,
        active: Optional[Callable[[], int]] = None,
    ) -> None:
        self.runtime = runtime
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.queue_size = queue_size
        self.metrics = metrics
        self.inline_max = inline_max_ms / 1000.0
        self.active = active  # how many callers may send steps now (open streams, calls in flight)
        self._token_seconds = None  # moving average of a lone step's ORT time per token
        self.inline_runs = 0
        self.has_c = runtime.card.has_cell_state
        self._pending: Deque[Step] = deque()
        self._running = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._last_batch = 1
        self._batch_seconds = 0.001  # moving average, for the retry hint
        self._buffers = threading.local()  # per thread: reused gather buffers for h and c
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort")
        self.batches = 0  # counters for tests and the bench: ORT calls, steps run,
        self.steps = 0  # largest ORT call, largest hand-over to the worker
        self.max_seen = 0
        self.max_dispatch = 0

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def run(
        self, tokens: np.ndarray, h: np.ndarray, c: Optional[np.ndarray], all_positions: bool = False, k: int = 5
    ) -> StepOutput:
        if len(self._pending) >= self.queue_size:
            hint = int(1000 * self._batch_seconds * (len(self._pending) / self.max_batch + 1)) + 1
            if self.metrics:
                self.metrics.queue_full()
            raise ResourceExhausted(
                f"step queue is full ({self.queue_size} steps waiting, --queue-size); retry in about {hint} ms",
                retry_after_ms=hint,
            )
        loop = asyncio.get_running_loop()
        if self._lone() and self._token_seconds * len(tokens) <= self.inline_max:
            # A lone step with nothing else queued: run it right here. The hop to
            # the worker thread and back costs more than a small model's step.
            self.inline_runs += 1
            (out,) = self._work([Step(tokens, h, c, all_positions, k, None)])
            if isinstance(out, BaseException):
                raise out
            return out
        future = loop.create_future()
        self._pending.append(Step(tokens, h, c, all_positions, k, future))
        if self._timer is not None and len(self._pending) >= self._enough():
            self._timer.cancel()
            self._timer = None
        self._kick(loop)
        return await future

    def _lone(self) -> bool:
        """One caller, nothing running or queued, and a lone step is known to be cheap."""
        return (
            self.inline_max > 0 and self._token_seconds is not None and not self._running
            and not self._pending and self._last_batch == 1 and (self.active is None or self.active() <= 1)
        )

    def _enough(self) -> int:
        """Queued steps worth dispatching without waiting: a full batch, or one from every active caller."""
        return min(self.max_batch, max(1, self.active())) if self.active else self.max_batch

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._running or self._timer is not None or not self._pending:
            return
        if self.max_delay > 0 and self._last_batch > 1 and len(self._pending) < self._enough():
            self._timer = loop.call_later(self.max_delay, self._on_timer, loop)
            return
        self._dispatch(loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._running and self._pending:
            self._dispatch(loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch: List[Step] = []
        while self._pending and len(batch) < self.max_batch:
            step = self._pending.popleft()
            if not step.future.done():  # cancelled callers are dropped
                batch.append(step)
        if self.metrics:
            self.metrics.queue_depth(len(self._pending))
        if not batch:
            return
        self._running = True
        self._last_batch = len(batch)
        self.max_dispatch = max(self.max_dispatch, len(batch))
        started = time.perf_counter()
        job = self._executor.submit(self._work, batch)
        job.add_done_callback(lambda done: loop.call_soon_threadsafe(self._finish, loop, batch, done, started))

    def _finish(self, loop, batch: List[Step], job, started: float) -> None:
        self._running = False
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.perf_counter() - started)
        self._kick(loop)  # the worker starts the next batch while we answer this one
        try:
            outputs = job.result()
        except BaseException as exc:  # noqa: BLE001 - delivered to every caller
            outputs = [exc] * len(batch)
        for step, out in zip(batch, outputs):
            if step.future.done():
                continue
            if isinstance(out, BaseException):
                step.future.set_exception(out)
            else:
                step.future.set_result(out)

    # -- worker thread ---------------------------------------------------
    def _work(self, batch: List[Step]) -> list:
        groups: Dict[int, List[int]] = {}
        for i, step in enumerate(batch):
            groups.setdefault(len(step.tokens), []).append(i)
        outputs: list = [None] * len(batch)
        for indices in groups.values():
            steps = [batch[i] for i in indices]
            try:
                results = self._run_group(steps)
            except Exception as exc:  # noqa: BLE001 - one bad group does not fail the others
                error = ServiceError(f"model run failed: {exc}")
                results = [error] * len(steps)
            for i, result in zip(indices, results):
                outputs[i] = result
        return outputs

    def _gather_buffer(self, which: int, b: int, row: np.ndarray) -> np.ndarray:
        """A reused [L, b, H] array to gather h (which=0) or c (1) into, per thread.

        A fresh array of this size comes from mmap and is page-faulted in on every
        batch, which cost more than the gather itself. Reuse is safe: onnxruntime
        only reads its inputs during ``run`` and returns fresh output arrays, and
        one thread runs one group at a time.
        """
        buffers = self._buffers.__dict__
        size = row.shape[0] * b * row.shape[1]
        buf = buffers.get(which)
        if buf is None or buf.size < size or buf.dtype != row.dtype:
            buf = buffers[which] = np.empty(max(size, row.size * self.max_batch), row.dtype)
        return buf[:size].reshape(row.shape[0], b, row.shape[1])

    def _gather(self, which: int, b: int, rows: List[np.ndarray]) -> np.ndarray:
        """np.stack(rows, axis=1) into a reused buffer (rows of mixed dtypes: a fresh one, promoted as before)."""
        try:
            return np.stack(rows, axis=1, out=self._gather_buffer(which, b, rows[0]), casting="no")
        except TypeError:
            return np.stack(rows, axis=1)

    def _run_group(self, steps: List[Step]) -> List[StepOutput]:
        b = len(steps)
        if b == 1:  # views, no copies
            s0 = steps[0]
            tokens, h = s0.tokens[None, :], s0.h[:, None, :]
            c = s0.c[:, None, :] if self.has_c else None
        else:
            # One concatenate (same T in a group) instead of np.stack's per-array Python work.
            tokens = np.concatenate([s.tokens for s in steps]).reshape(b, -1)  # [B, T]
            h = self._gather(0, b, [s.h for s in steps])  # [L, B, H]
            c = self._gather(1, b, [s.c for s in steps]) if self.has_c else None
        started = time.perf_counter()
        logits, hn, cn = self.runtime.run(tokens, h, c)
        seconds = time.perf_counter() - started
        if b == 1:
            per_token = seconds / tokens.shape[1]
            last = self._token_seconds
            self._token_seconds = per_token if last is None else 0.9 * last + 0.1 * per_token
        if self.metrics:
            self.metrics.ort_run(b, tokens.shape[1], seconds)
        self.batches += 1
        self.steps += b
        self.max_seen = max(self.max_seen, b)
        k = max(s.top_k for s in steps)
        # Rows to score: the last position of each step, or all of them.
        if not any(s.all_positions for s in steps):
            lp = log_softmax(logits[:, -1, :])
            ids, vals = top_k(lp, k)
            probs = np.exp(vals)  # one call for the batch; elementwise, so the same as per row
            # Each session keeps its own copies of its state rows and last log-probs: a
            # view would pin the whole batch's arrays for as long as the session idles.
            if b == 1:
                c0 = cn[:, 0, :].copy() if cn is not None else None
                return [StepOutput(lp, lp[0].copy(), ids, vals, probs, hn[:, 0, :].copy(), c0)]
            # Rows are split off by list() on [B, 1, ...] views (in C, not a Python slice each).
            copy = np.ndarray.copy
            ids, vals, probs = list(ids[:, None, :]), list(vals[:, None, :]), list(probs[:, None, :])
            for i, s in enumerate(steps):
                if s.top_k != k:
                    kk = s.top_k
                    ids[i], vals[i], probs[i] = ids[i][:, :kk], vals[i][:, :kk], probs[i][:, :kk]
            return list(
                map(
                    StepOutput,
                    lp[:, None, :],
                    map(copy, lp),
                    ids,
                    vals,
                    probs,
                    map(copy, hn.transpose(1, 0, 2)),
                    map(copy, cn.transpose(1, 0, 2)) if cn is not None else [None] * b,
                )
            )
        parts, spans, start = [], [], 0
        for i, s in enumerate(steps):
            part = logits[i] if s.all_positions else logits[i, -1:]
            parts.append(part)
            spans.append((start, start + len(part)))
            start += len(part)
        lp = log_softmax(np.concatenate(parts))
        ids, vals = top_k(lp, k)
        probs = np.exp(vals)
        out = []
        for i, (s, (a, z)) in enumerate(zip(steps, spans)):
            out.append(
                StepOutput(
                    logprobs=lp[a:z],
                    last=lp[z - 1].copy(),
                    top_ids=ids[a:z, : s.top_k],
                    top_logprobs=vals[a:z, : s.top_k],
                    top_probs=probs[a:z, : s.top_k],
                    h=hn[:, i, :].copy(),
                    c=cn[:, i, :].copy() if cn is not None else None,
                )
            )
        return out

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
