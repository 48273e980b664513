"""Long inputs in chunks: a step of more than ``--prefill-chunk`` tokens runs as
several model calls, each of at most that many tokens, carrying the state, so
other sessions' steps are batched in between instead of queueing behind one
huge call.
"""
from __future__ import annotations

from typing import Awaitable, Callable, List, Tuple

import numpy as np

from ..api.options import StepOptions
from ..api.values import Scores, State
from .batch_runner import StepOutput, StepRequest

Submit = Callable[[StepRequest], Awaitable[StepOutput]]


async def run_chunked(submit: Submit, ids: np.ndarray, state: State, options: StepOptions,
                      chunk: int) -> Tuple[Scores, State]:
    """Run ``ids`` in chunks of at most ``chunk`` tokens (0: one call); the scores of every
    position (all_positions) or of the last chunk's last position, and the new state."""
    chunk = chunk or len(ids)
    if len(ids) <= chunk:
        out = await submit(StepRequest(ids, state, options.all_positions, options.top_k))
        return out.scores, out.state
    parts: List[Scores] = []
    for begin in range(0, len(ids), chunk):
        last = begin + chunk >= len(ids)
        wanted = options.all_positions or last  # earlier chunks only carry the state on
        out = await submit(StepRequest(ids[begin:begin + chunk], state, options.all_positions,
                                       options.top_k if wanted else 0))
        state = out.state
        if wanted:
            parts.append(out.scores)
    if len(parts) == 1:
        return parts[0], state
    join = lambda field: np.concatenate([getattr(p, field) for p in parts])  # noqa: E731
    return Scores(join("logprobs"), parts[-1].last, join("top_ids"), join("top_logprobs"), join("top_probs")), state
