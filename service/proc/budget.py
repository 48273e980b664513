"""Per-message cost budget: in-process timers, off unless ``LSTM_BUDGET`` names a directory.

    t = budget.start()            # None when off: the hooks cost one global read and a branch
    ...synchronous work...
    budget.add("edge.encode", t)  # wall and this thread's CPU since ``t``

    t = budget.start()
    await something               # other coroutines run meanwhile: their CPU is not ours
    budget.add_wall("edge.run", t)

Each part keeps: ``events`` (times it was added), ``msgs`` (messages it stands for:
a batch-level part adds once with ``weight`` = its batch size, since every message in
the batch waits for it), ``wall_ns`` (wall time x weight) and ``cpu_ns`` (the thread's
CPU, not weighted: CPU per message is cpu_ns / messages). ``count(part)`` adds an event
with no time (a wake-up, a syscall).

When on, SIGUSR2 (``install``) writes the totals so far to ``<dir>/<pid>-<n>.json``;
``python -m bench --budget`` signals every process of the server at the edges of its
measurement window and takes the difference (docs/performance.md). A process that has
installed the handler says so with ``<dir>/<pid>.ready``, so the bench never sends
SIGUSR2 (whose default action is to terminate) to one that has not.

A leaf module: every room (edge, link, core) may time itself through it.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ENV = "LSTM_BUDGET"
DUMP_SIGNAL = signal.SIGUSR2

_dir = os.environ.get(ENV, "")
ON = bool(_dir)

Mark = Optional[Tuple[int, int]]  # (perf_counter_ns, thread_time_ns) at the start, None when off
_parts: Dict[str, List[int]] = {}  # part -> [events, msgs, wall_ns, cpu_ns]
_dumps = itertools.count(1)
_perf, _cpu = time.perf_counter_ns, time.thread_time_ns


def start() -> Mark:
    return (_perf(), _cpu()) if ON else None


def mark_at(perf_counter_seconds: float) -> Mark:
    """A wall-only mark at an earlier ``time.perf_counter()`` reading (the same clock)."""
    return (int(perf_counter_seconds * 1e9), 0) if ON else None


def _slot(part: str) -> List[int]:
    slot = _parts.get(part)
    if slot is None:
        slot = _parts[part] = [0, 0, 0, 0]
    return slot


def add(part: str, mark: Mark, weight: int = 1) -> None:
    """Wall time and this thread's CPU since ``mark`` (from ``start`` on the same thread)."""
    if mark is None:
        return
    wall, cpu = _perf() - mark[0], _cpu() - mark[1]
    slot = _slot(part)
    slot[0] += 1
    slot[1] += weight
    slot[2] += wall * weight
    slot[3] += cpu


def add_wall(part: str, mark: Mark, weight: int = 1) -> None:
    """Wall time only since ``mark`` (a span with awaits in it, or begun on another thread)."""
    if mark is None:
        return
    wall = _perf() - mark[0]
    slot = _slot(part)
    slot[0] += 1
    slot[1] += weight
    slot[2] += wall * weight


def count(part: str, n: int = 1) -> None:
    """An event with no time: a write, a read, a wake-up."""
    if ON:
        slot = _slot(part)
        slot[0] += n
        slot[1] += n


def totals() -> Dict[str, Dict[str, int]]:
    return {part: dict(zip(("events", "msgs", "wall_ns", "cpu_ns"), slot)) for part, slot in _parts.items()}


def dump(directory: Optional[str] = None) -> Path:
    """The totals so far, with this process's role and its threads' CPU, as JSON."""
    path = Path(directory or _dir) / f"{os.getpid()}-{next(_dumps)}.json"
    payload = {"pid": os.getpid(), "role": os.environ.get("LSTM_ROLE", "") or "single",
               "at_ns": _perf(), "process_cpu_ns": time.process_time_ns(), "parts": totals()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.rename(path)  # the bench never reads half a file
    return path


def install(loop) -> bool:
    """On SIGUSR2, dump (when on); returns whether it was installed."""
    if not ON:
        return False
    loop.add_signal_handler(DUMP_SIGNAL, dump)
    (Path(_dir) / f"{os.getpid()}.ready").write_text(os.environ.get("LSTM_ROLE", "") or "single")
    return True
