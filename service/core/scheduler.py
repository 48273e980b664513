"""Cross-session batching, the scheduling half: when steps go to the model.

    out = await scheduler.submit(StepRequest(tokens[T], state, all_positions, top_k))

Steps queue on the event loop. Whenever the worker thread is idle and
something is queued, everything queued (up to max_batch) goes to the worker
at once, where the BatchRunner (service/core/batch_runner.py) runs it; results
are delivered on the loop. While a batch runs, new steps accumulate, so
batches form from load alone ("continuous batching"). Nothing waits when the
worker is idle, except when ``max_delay_ms`` > 0, the previous batch had more
than one step and some active caller has not queued a step yet: then it
waits up to that long for a full batch or a step from every active caller.
One lone stream never waits; with many closed-loop streams this avoids
alternating tiny and big batches.

One exception to "the model runs in the worker": a lone step (one active
caller, nothing running or queued, the previous batch a single step) whose
measured cost is at most ``inline_max_ms`` runs on the loop thread. The two
thread hops (loop -> worker -> loop) cost 0.1-0.4 ms on a busy 2-core
machine, more than a small model's step; as soon as several callers are
active, steps batch in the worker.

The queue is bounded: beyond ``queue_size`` waiting steps ``submit`` raises
ResourceExhausted with a retry hint and the step is not taken. A step whose
caller is cancelled before its batch starts is dropped. Nothing here commits
state: the caller does, once it has the result, so a step that fails or is
cancelled leaves its session as it was.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Deque, List, Optional, Tuple

from .batch_runner import BatchRunner, BatchStats, StepOutput, StepRequest
from ..api.errors import ResourceExhausted
from ..proc import budget

Queued = Tuple[StepRequest, "asyncio.Future[StepOutput]"]


class Scheduler:
    def __init__(
        self,
        runner: BatchRunner,
        max_delay_ms: float = 0.0,
        queue_size: int = 1024,
        inline_max_ms: float = 0.0,
        active: Optional[Callable[[], int]] = None,
        metrics=None,
    ) -> None:
        self.runner = runner
        self.max_batch = runner.max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.queue_size = queue_size
        self.inline_max = inline_max_ms / 1000.0
        self.active = active  # how many callers may send steps now (open streams, calls in flight)
        self.metrics = metrics
        self._pending: Deque[Queued] = deque()
        self._running = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._last_batch = 1
        self._batch_seconds = 0.001  # moving average, for the retry hint
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort")

    @property
    def stats(self) -> BatchStats:
        return self.runner.stats

    @property
    def depth(self) -> int:
        return len(self._pending)

    def retry_hint_ms(self) -> int:
        """About how long until the queue has drained by one batch."""
        return int(1000 * self._batch_seconds * (len(self._pending) / self.max_batch + 1)) + 1

    async def submit(self, step: StepRequest) -> StepOutput:
        if len(self._pending) >= self.queue_size:
            if self.metrics:
                self.metrics.queue_full()
            hint = self.retry_hint_ms()
            raise ResourceExhausted(
                f"step queue is full ({self.queue_size} steps waiting, --queue-size); retry in about {hint} ms",
                retry_after_ms=hint, reason="QUEUE_FULL",
            )
        cost = self.runner.token_seconds
        if self._lone() and cost is not None and cost * len(step.tokens) <= self.inline_max:
            # A lone step with nothing else queued: run it right here. The hop to
            # the worker thread and back costs more than a small model's step.
            self.stats.inline_runs += 1
            mark = budget.start()  # the cost timers (proc/budget.py), None when off
            (out,) = self.runner.execute([step])
            budget.add("engine.batch", mark)
            budget.add_wall("engine.step", mark)
            if isinstance(out, BaseException):
                raise out
            return out
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((step, future))
        if self._timer is not None and len(self._pending) >= self._enough():
            self._timer.cancel()
            self._timer = None
        mark = budget.start()
        self._kick(loop)
        try:
            return await future
        finally:
            budget.add_wall("engine.step", mark)  # queued -> its result on the loop

    def _lone(self) -> bool:
        """One caller, nothing running or queued, and a lone step is known to be cheap."""
        return (
            self.inline_max > 0 and self.runner.token_seconds is not None and not self._running
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
        mark = budget.start()
        batch: List[Queued] = []
        while self._pending and len(batch) < self.max_batch:
            queued = self._pending.popleft()
            if not queued[1].done():  # cancelled callers are dropped
                batch.append(queued)
        if self.metrics:
            self.metrics.queue_depth(len(self._pending))
        if not batch:
            return
        self._running = True
        self._last_batch = len(batch)
        self.stats.max_dispatch = max(self.stats.max_dispatch, len(batch))
        started = time.perf_counter()

        def on_group(indices: List[int], outputs: list) -> None:  # on the worker: answer this group now
            loop.call_soon_threadsafe(self._deliver, [batch[i] for i in indices], outputs)

        job = self._executor.submit(self.runner.execute, [step for step, _ in batch], on_group)
        job.add_done_callback(lambda done: loop.call_soon_threadsafe(self._finish, loop, batch, done, started))
        budget.add("engine.dispatch", mark, len(batch))

    def _finish(self, loop, batch: List[Queued], job, started: float) -> None:
        budget.add_wall("engine.batch", budget.mark_at(started), len(batch))  # dispatched -> back on the loop
        self._running = False
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.perf_counter() - started)
        self._kick(loop)  # the worker starts the next batch
        mark = budget.start()
        try:
            outputs = job.result()
        except BaseException as exc:  # noqa: BLE001 - delivered to every caller
            outputs = [exc] * len(batch)
        self._deliver(batch, outputs)  # whatever a group did not answer already (a failed job)
        budget.add("engine.deliver", mark, len(batch))

    @staticmethod
    def _deliver(queued: List[Queued], outputs: list) -> None:
        for (_, future), out in zip(queued, outputs):
            if future.done():
                continue
            if isinstance(out, BaseException):
                future.set_exception(out)
            else:
                future.set_result(out)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
