"""The event loop the server, its latency probe and the benchmark run on:
uvloop where it is installed (it is a serving dependency on Linux), else asyncio."""
from __future__ import annotations

import asyncio
from typing import Tuple


def event_loop_runner() -> Tuple[asyncio.Runner, str]:
    """An asyncio.Runner on the fastest loop available, and that loop's name."""
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works too
        return asyncio.Runner(), "asyncio"
    return asyncio.Runner(loop_factory=uvloop.new_event_loop), "uvloop"
