"""Cross-session batching, the scheduling half: when steps go to the model.

    out = await scheduler.submit(StepRequest(tokens[T], state, all_positions, top_k))

Steps queue on the event loop; one worker thread ("ort") takes everything
queued (up to max_batch) whenever it is free, and the BatchRunner
(service/core/batch_runner.py) runs it; results are delivered on the loop.
While a batch runs, new steps accumulate, so batches form from load alone
("continuous batching"). Nothing waits when the worker is idle, except when
``max_delay_ms`` > 0, the previous batch had more than one step and some
active caller has not queued a step yet: then it waits up to that long for a
full batch or a step from every active caller. One lone stream never waits;
with many closed-loop streams this avoids alternating tiny and big batches.

Pipelined, not alternating: the worker pulls its next batch from the queue
itself (under a lock) the moment it has handed the previous batch's results
to the loop, so the next model call runs while the loop scores nothing but
resolves futures, encodes and sends the previous batch's replies. The loop is
never on the path from one batch to the next. Thread hand-offs: the loop
wakes the worker only when it sleeps with nothing queued (``stats.wakeups``),
and the worker wakes the loop once per model call with that call's results
(``stats.handoffs``); under load both are per batch, not per message.

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
import threading
import time
from collections import deque
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
        self._pending: Deque[Queued] = deque()  # appended on the loop, taken by the worker, under _lock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._sleeping = False  # the worker waits for work (the loop must wake it)
        self._delaying = False  # the worker waits out max_delay for a fuller batch
        self._closed = False
        self._running = False  # the worker holds a batch
        self._last_batch = 1
        self._batch_seconds = 0.001  # moving average, for the retry hint
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._worker = threading.Thread(target=self._work, name="ort", daemon=True)
        self._worker.start()

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
        loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._pending.append((step, future))
            if self._sleeping or (self._delaying and len(self._pending) >= self._enough()):
                self._sleeping = False
                self.stats.wakeups += 1
                self._wake.notify()
        mark = budget.start()
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

    # -- the worker thread ------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            started = time.perf_counter()

            def on_group(indices: List[int], outputs: list, batch=batch) -> None:  # answer this group now
                self._post([batch[i] for i in indices], outputs)

            outputs: list
            try:
                outputs = self.runner.execute([step for step, _ in batch], on_group)
            except BaseException as exc:  # noqa: BLE001 - delivered to every caller
                outputs = [exc] * len(batch)
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.perf_counter() - started)
            self._running = False
            budget.add_wall("engine.batch", budget.mark_at(started), len(batch))  # taken -> results handed back
            self._post(batch, outputs)  # whatever a group did not answer already

    def _take(self) -> Optional[List[Queued]]:
        """The next batch (after waiting for work, and for company where max_delay says so); None: closed."""
        with self._lock:
            while True:
                while not self._pending and not self._closed:
                    self._sleeping = True
                    self._wake.wait()
                self._sleeping = False
                if self._closed:
                    return None
                if self.max_delay > 0 and self._last_batch > 1 and len(self._pending) < self._enough():
                    deadline = time.monotonic() + self.max_delay
                    self._delaying = True
                    while not self._closed and len(self._pending) < self._enough():
                        left = deadline - time.monotonic()
                        if left <= 0 or not self._wake.wait(left):
                            break
                    self._delaying = False
                mark = budget.start()
                batch: List[Queued] = []
                while self._pending and len(batch) < self.max_batch:
                    queued = self._pending.popleft()
                    if not queued[1].done():  # cancelled callers are dropped
                        batch.append(queued)
                if self.metrics:
                    self.metrics.queue_depth(len(self._pending))
                if batch:
                    self._running = True
                    self._last_batch = len(batch)
                    self.stats.max_dispatch = max(self.stats.max_dispatch, len(batch))
                    budget.add("engine.dispatch", mark, len(batch))
                    return batch

    def _post(self, queued: List[Queued], outputs: list) -> None:
        """Hand results to the loop: one wake-up of the loop per model call."""
        assert self._loop is not None
        self.stats.handoffs += 1
        try:
            self._loop.call_soon_threadsafe(self._deliver, queued, outputs)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    @staticmethod
    def _deliver(queued: List[Queued], outputs: list) -> None:
        mark = budget.start()
        for (_, future), out in zip(queued, outputs):
            if future.done():
                continue
            if isinstance(out, BaseException):
                future.set_exception(out)
            else:
                future.set_result(out)
        budget.add("engine.deliver", mark, len(queued))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._worker.join()
