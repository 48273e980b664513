"""A session's journal: the state before its most recent steps and their token ids, so
the session can be rewound to exactly any step count inside it (replaying ids through
the model is exact). It closes what no reply can: a Generate's tokens written but never
read, a stream cut with replies unread, an OK that arrived late. The client's next call
with ``expected_steps`` = the count it last saw rewinds there first (or RewindSession).

Bound: it always covers the whole of the last call. At the start of each call (a unary
step, a stream step, a Generate's first token) a journal holding ``bound - per_call``
tokens or more is re-based at the session's present state, and one call adds at most
``per_call`` tokens (a prompt plus a Generate's tokens), so it never holds more than
``bound``.

Confirming. Only the steps whose outcome the client could be in doubt of need a rewind.
A call whose ``expected_steps`` equals the session's count proves the client saw every
step before it: the journal's ``floor`` moves up to that count (nothing below it can be
rewound to any more), and its base stays where it is: confirming takes no state. A
RewindSession to the session's own count confirms every step, the last call's too: the
journal is re-based at the session's present state, which it shares with the session.

Memory: a journal keeps its base state ([L, H] per state part) and the log-probs after it
([V]), and 4 bytes per id. The base costs nothing of its own while it is the shared zero
state (a session counted from zero: created, reset, ``start``, until ``bound`` tokens) or
the session's present state (after a RewindSession that confirmed all); only then is an
idle session's journal a state of its own, and only while its last call could be in doubt
(it stepped since the journal was last re-based at the present state).
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
    floor: int = -1  # the lowest count a rewind may reach (confirmed up to there); -1: the base

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def low(self) -> int:
        """The lowest count the session can be rewound to."""
        return max(self.steps, self.floor)

    def reaches(self, wanted: int, steps: int) -> bool:
        return self.low <= wanted <= steps

    def ids_to(self, steps: int) -> np.ndarray:
        """The ids from the base up to ``steps`` (base <= steps <= the session's count)."""
        return np.frombuffer(self.ids, np.int32)[: steps - self.steps].astype(np.int64)

    def truncate(self, steps: int) -> None:
        del self.ids[steps - self.steps:]
        self.floor = min(self.floor, steps)

    def append(self, ids: np.ndarray) -> None:
        self.ids.frombytes(np.asarray(ids, np.int32).tobytes())

    def nbytes(self) -> int:
        arrays = list(self.state) + ([self.last_logprobs] if self.last_logprobs is not None else [])
        return sum(a.nbytes for a in arrays) + self.ids.itemsize * len(self.ids)


def unreachable(steps: int, wanted: int, journal: Optional[Journal], field_name: str) -> FailedPrecondition:
    """FAILED_PRECONDITION for a count the session cannot be rewound to, with the reachable range."""
    low = journal.low if journal is not None else steps
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
        return journal.reaches(wanted, steps) if journal is not None else wanted == steps

    def confirmed_all(self, steps: int, state: State, last_logprobs: Optional[np.ndarray]) -> Optional[Journal]:
        """The journal after a RewindSession to the session's own count (every step confirmed):
        based at the present state, shared with the session (no state of its own while idle)."""
        return Journal(steps, state, last_logprobs) if self.bound else None

    def before_commit(self, journal: Optional[Journal], steps: int, state: State,
                      last_logprobs: Optional[np.ndarray], ids: np.ndarray, start: bool, call_start: bool,
                      confirmed: bool, zeros: State) -> Optional[Journal]:
        """The journal after a commit of ``ids`` onto the session as it is now (``steps``, ``state``)."""
        if not self.bound:
            return None
        if start:  # counted from the zero state again
            journal = Journal(0, zeros, None)
        elif journal is None or journal.count > self.bound or (
                call_start and journal.count >= self.bound - self.per_call):
            journal = Journal(steps, state, last_logprobs)
        elif confirmed:  # the client saw every step up to here: none below can be asked for again
            journal.floor = steps  # the base stays (replaying from it is exact): confirming takes no state
        journal.append(ids)
        return journal
