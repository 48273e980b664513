"""The contract between the edge and the engine, written once: every engine operation
the servicers (lstm.v1, KServe v2, Explain) use, one method each, and the hold a
call gets on a session. Values crossing it are in api/values.py and api/options.py;
failures are api/errors.py's ServiceErrors.

Two engines keep it: ``core.engine.Engine`` in the single process, and
``link.remote_engine.RemoteEngine`` in a front process of ``--fronts N`` (each
operation a message over the link). mypy checks both against it
(``service/api/conformance.py``); the servicers type their engine as EngineApi.

Words (docs/glossary.md): a *hold* is a call's exclusive use of a session while
it computes; *commit* makes a computed step's new state the session's state
(only while the call is live); *release* ends a hold, after a commit or without
one. A session's *state* is its in-memory recurrent state; a *snapshot record*
is what the state store keeps of it.
"""
from __future__ import annotations

from typing import (Any, AsyncIterator, Awaitable, List, Optional, Protocol, Sequence, TYPE_CHECKING, Tuple, TypeVar,
                    Union)

import numpy as np

from .engine_base import CreateCommit, Remembering
from .options import GenerateOptions, StepOptions
from .values import (ANYONE, Caller, DeferredCommit, Generated, Kept, Live, Remembrance, ServedRuntime, SessionInfo,
                     State, StepResult, always)

if TYPE_CHECKING:  # types only: api/ imports no other room at run time
    from lstm_service.model.card import ModelCard

    from ..core.vocab import Vocab
    from ..proc.config import Config


class PendingStep(Protocol):
    """A step computed under a hold, not committed yet."""

    @property
    def result(self) -> StepResult: ...


P = TypeVar("P", bound=PendingStep)  # each engine's own pending step: a hold commits only what it ran


class HoldApi(Protocol[P]):
    """A call's hold on a session (or a scratch hold: no session, nothing committed)."""

    @property
    def steps(self) -> int: ...  # the session's steps when the hold was taken

    @property
    def has_session(self) -> bool: ...

    @property
    def info(self) -> SessionInfo: ...

    async def run(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                  expected_steps: Optional[int] = None) -> P: ...

    def commit(self, pending: P, live: Live = always) -> StepResult: ...

    async def step(self, ids: np.ndarray, options: StepOptions, start: bool = False,
                   expected_steps: Optional[int] = None, live: Live = always) -> StepResult: ...

    async def read_state(self) -> State: ...

    def deferred_commit(self, pending: P) -> DeferredCommit: ...

    def end_session(self, why: str) -> None: ...

    def release(self) -> None: ...


class StreamSlotApi(Protocol):
    """One of a caller's open streams, counted until released."""

    def release(self) -> None: ...


class EngineApi(Protocol):
    config: "Config"
    card: "ModelCard"
    vocab: "Vocab"

    @property
    def runtime(self) -> ServedRuntime: ...

    @property
    def zeros(self) -> State: ...

    def written(self) -> Optional[Awaitable[None]]: ...

    # -- checks where the request is decoded (no engine work) -------------------------
    def tokens(self, tokens: Union[Sequence[int], np.ndarray], text: str, what: str = "input") -> np.ndarray: ...

    def step_options(self, top_k: Optional[int], all_positions: bool, logprobs: bool) -> StepOptions: ...

    def generate_options(self, max_tokens: int, temperature: Optional[float], top_k: int, top_p: Optional[float],
                         seed: Optional[int], stop: Sequence[str]) -> GenerateOptions: ...

    # -- steps ------------------------------------------------------------------------------
    async def open_stream(self, session_id: str, create: bool, ttl: float, end_with_stream: bool,
                          caller: Caller = ANYONE, remember: Optional[Remembrance] = None) -> HoldApi[Any]: ...

    # yielding: the hold gives its session up between steps when another call asks, and takes
    # it again at its next step (a KServe stream's sequences, kept between their requests)
    async def hold(self, session_id: str, caller: Caller = ANYONE, *, yielding: bool = False) -> HoldApi[Any]: ...

    async def predict(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                      expected_steps: Optional[int] = None, live: Live = always,
                      caller: Caller = ANYONE, remember: Optional[Remembrance] = None) -> StepResult: ...

    async def predict_deferred(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                               expected_steps: Optional[int] = None,
                               caller: Caller = ANYONE) -> Tuple[StepResult, DeferredCommit]: ...

    def generate(self, session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions,
                 expected_steps: Optional[int] = None, caller: Caller = ANYONE,
                 remember: Optional[Remembrance] = None) -> AsyncIterator[Generated]: ...

    # -- request ids (AIP-155): the engine keeps each answer with its commit, per (principal, request_id);
    # the calls above and below take a ``remember`` to keep ----------------------------------------------
    async def recall(self, request_id: str, fingerprint: bytes, caller: Caller = ANYONE) -> Optional[Kept]: ...

    # -- quotas of calls that hold no session -------------------------------------------------
    async def charge_tokens(self, n: int, caller: Caller = ANYONE) -> None: ...

    async def stream_slot(self, caller: Caller = ANYONE) -> StreamSlotApi: ...

    # -- sessions ---------------------------------------------------------------------------------
    async def create(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                     options: StepOptions, live: Live = always, caller: Caller = ANYONE,
                     remember: Optional[Remembering] = None) -> Tuple[SessionInfo, Optional[StepResult]]: ...

    async def create_deferred(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                              options: StepOptions,
                              caller: Caller = ANYONE) -> Tuple[Optional[StepResult], CreateCommit]: ...

    async def get_session(self, session_id: str, caller: Caller = ANYONE) -> SessionInfo: ...

    # reset, delete, fork, import: applied only while ``live()`` (a call that ends non-OK changed nothing)
    async def reset_session(self, session_id: str, live: Live = always, caller: Caller = ANYONE,
                            remember: Optional[Remembrance] = None) -> SessionInfo: ...

    async def delete_session(self, session_id: str, live: Live = always, caller: Caller = ANYONE,
                             remember: Optional[Remembrance] = None) -> SessionInfo: ...

    async def rewind_session(self, session_id: str, steps: int, live: Live = always,
                             caller: Caller = ANYONE) -> SessionInfo: ...

    async def fork_session(self, session_id: str, new_id: Optional[str], ttl: float, live: Live = always,
                           caller: Caller = ANYONE, remember: Optional[Remembrance] = None) -> SessionInfo: ...

    async def list_sessions(self, limit: int, caller: Caller = ANYONE) -> Tuple[List[SessionInfo], int]: ...

    async def export_session(self, session_id: str, key: bytes, caller: Caller = ANYONE) -> Tuple[bytes, int]: ...

    async def import_session(self, blob: bytes, key: bytes, session_id: Optional[str], ttl: float,
                             live: Live = always, caller: Caller = ANYONE,
                             remember: Optional[Remembrance] = None) -> SessionInfo: ...

    async def read_state(self, session_id: str, caller: Caller = ANYONE) -> Tuple[int, State]: ...
