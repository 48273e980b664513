"""Long inputs in chunks: a step of more than ``--prefill-chunk`` tokens runs as
several model calls, each of at most that many tokens, carrying the state, so
other sessions' steps are batched in between instead of queueing behind one
huge call.

While other sessions are active (``busy()``), chunks are at most BUSY_CHUNK
tokens, so a one-token step that arrives while a chunk runs waits for a short
call, not a 64-token one (a call takes as many time steps as its longest row;
with eight prompts looping beside a one-token victim, ``python -m bench --noisy``
measured the victim's p50 rise at about 5 ms with 8-token chunks against 12-14
with 16). A chunk costs one model call's overhead, small beside its 8 time steps
of a batch; a prompt alone keeps the configured size. Each chunk's size is
chosen as it is submitted; the results do not depend on it (bitwise; the state
is carried exactly either way).
"""
from __future__ import annotations

from typing import Awaitable, Callable, List, Optional, Tuple

import numpy as np

from ..api.options import StepOptions
from ..api.values import Scores, State
from .batch_runner import StepOutput, StepRequest

Submit = Callable[[StepRequest], Awaitable[StepOutput]]

BUSY_CHUNK = 8


async def run_chunked(submit: Submit, ids: np.ndarray, state: State, options: StepOptions,
                      chunk: int, busy: Optional[Callable[[], bool]] = None) -> Tuple[Scores, State]:
    """Run ``ids`` in chunks of at most ``chunk`` tokens (0: one call; at most BUSY_CHUNK while
    ``busy()``); the scores of every position (all_positions) or of the last chunk's last
    position, and the new state."""
    if not chunk:  # --prefill-chunk 0: one call, whoever else is active
        chunk, busy = len(ids), None
    size = min(chunk, BUSY_CHUNK) if busy is not None and busy() else chunk
    if len(ids) <= size:
        out = await submit(StepRequest(ids, state, options.all_positions, options.top_k))
        return out.scores, out.state
    parts: List[Scores] = []
    begin = 0
    while begin < len(ids):
        size = min(chunk, BUSY_CHUNK) if busy is not None and busy() else chunk
        last = begin + size >= len(ids)
        wanted = options.all_positions or last  # earlier chunks only carry the state on
        out = await submit(StepRequest(ids[begin:begin + size], state, options.all_positions,
                                       options.top_k if wanted else 0))
        state, begin = out.state, begin + size
        if wanted:
            parts.append(out.scores)
    if len(parts) == 1:
        return parts[0], state
    join = lambda field: np.concatenate([getattr(p, field) for p in parts])  # noqa: E731
    return Scores(join("logprobs"), parts[-1].last, join("top_ids"), join("top_logprobs"), join("top_probs")), state
