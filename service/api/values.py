"""The values that cross the edge <-> engine contract (api/engine.py): who calls
(Caller), what a step gives back (Scores, StepResult), a generated token
(Generated), what a client may see of a session (SessionInfo), a session's
state, and the model served (ServedRuntime). Plain data, no behaviour: both
engines build them, the edge encodes them, the link carries them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Protocol, Tuple

import numpy as np

from .options import StepOptions

ANONYMOUS = "anonymous"  # the one principal when no authentication is configured
State = Tuple[np.ndarray, ...]  # a session's recurrent state: one [L, H] array per card.state_names
Live = Callable[[], bool]  # is the call still wanted? (not cancelled, deadline not passed)
# commit(wanted, remember=None): commit if wanted (and the session lives), then release; a Remembrance
# is kept under its request id in the same synchronous stretch as the commit
DeferredCommit = Callable[..., None]


def always() -> bool:
    return True


@dataclass(frozen=True)
class Caller:
    """The principal a call acts as. An admin sees every principal's sessions."""

    principal: str = ANONYMOUS
    admin: bool = False

    @property
    def owner(self) -> Optional[str]:
        """The owner to filter sessions by: None for an admin (no filter)."""
        return None if self.admin else self.principal


ANYONE = Caller()


@dataclass(eq=False)
class Scores:
    logprobs: np.ndarray  # [P, V]: P = T with all_positions, else 1
    last: np.ndarray  # [V] log-probs after the last token (own copy, kept by the session; empty across the link)
    top_ids: np.ndarray  # [P, k], most likely first
    top_logprobs: np.ndarray  # [P, k]
    top_probs: np.ndarray  # [P, k]: exp(top_logprobs)


@dataclass
class StepResult:
    session_id: str
    steps: int  # the session's steps after this one
    consumed: int
    scores: Scores
    options: StepOptions

    @property
    def first_position(self) -> int:
        return self.consumed - len(self.scores.top_ids)


@dataclass
class Generated:
    token: int
    piece: bytes
    text: str
    logprob: float
    steps: int
    finish: Optional[str]  # None until the last: "length" | "stop"


@dataclass(frozen=True)
class SessionInfo:
    """What a client may see of a session, copied out (the edge never holds a live Session)."""

    id: str
    steps: int
    age_seconds: float
    idle_seconds: float
    ttl_seconds: float
    expires_in_seconds: float
    busy: bool


@dataclass(frozen=True)
class Remembrance:
    """A call's request id (AIP-155), handed to the engine with its commit: the engine keeps
    the answer in the same synchronous stretch as the commit, so no call applies without
    its answer being kept (in either server mode)."""

    request_id: str
    fingerprint: bytes  # the method and the request without its id (a reuse for another request is refused)
    answer: bytes = b""  # the reply as far as it is known before the commit (the edge's encoding)


@dataclass
class Kept:
    """What the engine kept under a request id: the reply known before the commit, and what
    the commit added (the session record; a Generate's tokens, as each was kept)."""

    answer: bytes
    info: Optional[SessionInfo] = None
    tokens: List[Generated] = field(default_factory=list)
    running: bool = False  # a Generate still running (its retry is SESSION_BUSY until it ends)


class ServedRuntime(Protocol):
    """What is served, for model descriptions: the precision, the providers onnxruntime really
    gave, the model file."""

    @property
    def precision(self) -> str: ...

    @property
    def providers(self) -> List[str]: ...

    @property
    def path(self) -> object: ...
