"""A session's journal: the state before its most recent steps and their token ids, so
the session can be rewound to exactly any step count inside it (replaying ids through
the model is exact). It closes what no reply can: a Generate's tokens written but never
read, a stream cut with replies unread, an OK that arrived late. The client's next call
with ``expected_steps`` = the count it last saw rewinds there first (or RewindSession).

Bound: it always covers the whole of the last call. At the start of each call (a unary
step, a stream step, a Generate's first token) a journal holding ``bound - per_call``
tokens or more is re-based at the session's present state, and one call adds at most
``per_call`` tokens (a prompt plus a Generate's tokens), so it never holds more than
``bound``. A call whose ``expected_steps`` equals the session's count confirms everything
before it: the journal is re-based there too (the older steps are dropped).

Memory: a journal keeps one state ([L, H] per state part), the log-probs after it ([V])
and its ids; a session that was never stepped, or with journaling off, keeps none.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..api.errors import FailedPrecondition
from ..api.values import State


@dataclass(slots=True)
class Journal:
    steps: int  # the session's count at the base
    state: State  # the state at the base (read-only arrays, shared with whoever held them)
    last_logprobs: Optional[np.ndarray]
    ids: "array[int]" = field(default_factory=lambda: array("i"))  # since the base, 4 bytes each

    @property
    def count(self) -> int:
        return len(self.ids)

    def ids_to(self, steps: int) -> np.ndarray:
        """The ids from the base up to ``steps`` (base <= steps <= the session's count)."""
        return np.frombuffer(self.ids, np.int32)[: steps - self.steps].astype(np.int64)

    def truncate(self, steps: int) -> None:
        del self.ids[steps - self.steps:]

    def append(self, ids: np.ndarray) -> None:
        self.ids.frombytes(np.asarray(ids, np.int32).tobytes())

    def nbytes(self) -> int:
        arrays = list(self.state) + ([self.last_logprobs] if self.last_logprobs is not None else [])
        return sum(a.nbytes for a in arrays) + self.ids.itemsize * len(self.ids)


def unreachable(steps: int, wanted: int, journal: Optional[Journal], field_name: str) -> FailedPrecondition:
    """FAILED_PRECONDITION for a count the session cannot be rewound to, with the reachable range."""
    low = journal.steps if journal is not None else steps
    metadata = {"steps": str(steps), "reachable_from": str(low), "reachable_to": str(steps)}
    if wanted > steps:
        return FailedPrecondition(
            f"{field_name} is {wanted} but the session has consumed {steps} tokens (it is ahead of the session); "
            "nothing was applied", reason="STEPS_MISMATCH", metadata=metadata, field=field_name)
    return FailedPrecondition(
        f"{field_name} is {wanted} but the session has consumed {steps} tokens and only steps {low} to {steps} "
        "are in its journal (it reaches back over the whole last call); nothing was applied",
        reason="OUTSIDE_JOURNAL", metadata=metadata, field=field_name)


class Journals:
    """The engine's journaling policy (bound, per-call maximum); 0 = off."""

    def __init__(self, bound: int, per_call: int) -> None:
        self.bound = bound
        self.per_call = per_call

    def reachable(self, journal: Optional[Journal], steps: int, wanted: int) -> bool:
        low = journal.steps if journal is not None else steps
        return low <= wanted <= steps

    def before_commit(self, journal: Optional[Journal], steps: int, state: State,
                      last_logprobs: Optional[np.ndarray], ids: np.ndarray, start: bool, call_start: bool,
                      confirmed: bool, zeros: State) -> Optional[Journal]:
        """The journal after a commit of ``ids`` onto the session as it is now (``steps``, ``state``)."""
        if not self.bound:
            return None
        if start:  # counted from the zero state again
            journal = Journal(0, zeros, None)
        elif journal is None or confirmed or journal.count > self.bound or (
                call_start and journal.count >= self.bound - self.per_call):
            journal = Journal(steps, state, last_logprobs)
        journal.append(ids)
        return journal
