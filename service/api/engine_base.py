"""What both engines share, written once: request checks that run where the request
is decoded (before anything crosses the link), the zero state, and the one-shot
calls built from their two-phase halves (the engine computes and holds the result;
the caller checks liveness where it knows it and commits or not).

``core.engine.Engine`` (in process) and ``link.remote_engine.RemoteEngine`` (a
front's view of the engine process) both derive from it; mypy checks both against
``api.engine.EngineApi``.
"""
from __future__ import annotations

from typing import Awaitable, Callable, Optional, Sequence, TYPE_CHECKING, Tuple, Union

import numpy as np

from . import options as opts
from .errors import CallEnded
from .options import GenerateOptions, StepOptions
from .values import ANYONE, Caller, DeferredCommit, Live, Remembrance, SessionInfo, State, StepResult, always

if TYPE_CHECKING:  # types only: api/ imports no other room at run time
    from lstm_service.model.card import ModelCard

    from ..core.vocab import Vocab
    from ..proc.config import Config

# create's commit(wanted, remember=None): the new session; a Remembrance is kept under its
# request id with the session's record, in the same synchronous stretch as the commit
CreateCommit = Callable[..., Awaitable[Optional[SessionInfo]]]
# A session-record op's commit(wanted, remember=None) (reset, delete, fork, import): applies it
# with True (the session's record after it), drops it with False. Everything that can refuse runs before.
RecordCommit = CreateCommit
Remembering = Callable[[Optional[StepResult]], Remembrance]  # a create's remembrance, given its prompt's result


class EngineBase:
    def __init__(self, config: "Config", card: "ModelCard", vocab: "Vocab") -> None:
        self.config = config
        self.card = card
        self.vocab = vocab

    # -- checks (before anything runs) ------------------------------------------------
    def tokens(self, tokens: Union[Sequence[int], np.ndarray], text: str, what: str = "input") -> np.ndarray:
        return self.vocab.encode(tokens, text, self.config.max_tokens_per_message, what)

    def step_options(self, top_k: Optional[int], all_positions: bool, logprobs: bool) -> StepOptions:
        return opts.step_options(top_k, all_positions, logprobs, self.vocab.size)

    def generate_options(self, max_tokens: int, temperature: Optional[float], top_k: int, top_p: Optional[float],
                         seed: Optional[int], stop: Sequence[str]) -> GenerateOptions:
        return opts.generate_options(max_tokens, temperature, top_k, top_p, seed, stop, self.vocab.size,
                                     self.config.max_generate_tokens)

    def written(self) -> Optional[Awaitable[None]]:
        """Something to await before a reply leaves, or None: what this call committed must have
        reached the engine first (with --fronts the commit is a frame on the link, written with
        the others of this loop turn; in one process it is applied already)."""
        return None

    @property
    def zeros(self) -> State:
        """The zero state, one [L, H] array per part of the card's state."""
        shape = (self.card.layers, self.card.hidden_size)
        return tuple(np.zeros(shape, np.float32) for _ in self.card.state_names)

    # -- each engine's two-phase halves ---------------------------------------------------
    async def predict_deferred(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                               expected_steps: Optional[int] = None,
                               caller: Caller = ANYONE) -> Tuple[StepResult, DeferredCommit]:
        raise NotImplementedError  # pragma: no cover - each engine has its own

    async def create_deferred(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                              options: StepOptions,
                              caller: Caller = ANYONE) -> Tuple[Optional[StepResult], CreateCommit]:
        raise NotImplementedError  # pragma: no cover - each engine has its own

    async def reset_deferred(self, session_id: str, caller: Caller = ANYONE) -> RecordCommit:
        raise NotImplementedError  # pragma: no cover - each engine has its own

    async def delete_deferred(self, session_id: str, caller: Caller = ANYONE) -> RecordCommit:
        raise NotImplementedError  # pragma: no cover - each engine has its own

    async def rewind_deferred(self, session_id: str, steps: int, caller: Caller = ANYONE) -> RecordCommit:
        raise NotImplementedError  # pragma: no cover - each engine has its own

    async def fork_deferred(self, session_id: str, new_id: Optional[str], ttl: float,
                            caller: Caller = ANYONE) -> RecordCommit:
        raise NotImplementedError  # pragma: no cover - each engine has its own

    async def import_deferred(self, blob: bytes, key: bytes, session_id: Optional[str], ttl: float,
                              caller: Caller = ANYONE) -> RecordCommit:
        raise NotImplementedError  # pragma: no cover - each engine has its own

    # -- one-shot calls, from their two-phase halves ----------------------------------------
    async def predict(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                      expected_steps: Optional[int] = None, live: Live = always, caller: Caller = ANYONE,
                      remember: Optional[Remembrance] = None) -> StepResult:
        """One step, committed only if ``live()`` still holds once its result is in."""
        result, commit = await self.predict_deferred(session_id, ids, options, start, expected_steps, caller)
        wanted = live()
        commit(wanted, remember)
        if not wanted:
            raise CallEnded("the call ended (cancelled or past its deadline) before its result was committed")
        return result

    async def create(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                     options: StepOptions, live: Live = always, caller: Caller = ANYONE,
                     remember: Optional[Remembering] = None) -> Tuple[SessionInfo, Optional[StepResult]]:
        """A new session, prefilled with ``prompt`` if given. Nothing is created unless the
        whole call succeeds (no orphan whose id the client never learns). ``remember(result)``:
        the request id to keep with the commit."""
        result, commit = await self.create_deferred(session_id, ttl, prompt, options, caller)
        try:
            remembrance = remember(result) if remember is not None else None
        except BaseException:
            await commit(False)
            raise
        if not live():  # with or without a prompt: a call that ends non-OK creates nothing
            await commit(False)
            raise CallEnded("the call ended (cancelled or past its deadline) before the session was created")
        info = await commit(True, remembrance)
        assert info is not None
        return info, result

    async def reset_session(self, session_id: str, live: Live = always, caller: Caller = ANYONE,
                            remember: Optional[Remembrance] = None) -> SessionInfo:
        """The session back at its zero state, only if the call is still live once all checks passed."""
        return await self._apply_if_live(await self.reset_deferred(session_id, caller), live, remember)

    async def delete_session(self, session_id: str, live: Live = always, caller: Caller = ANYONE,
                             remember: Optional[Remembrance] = None) -> SessionInfo:
        return await self._apply_if_live(await self.delete_deferred(session_id, caller), live, remember)

    async def rewind_session(self, session_id: str, steps: int, live: Live = always,
                             caller: Caller = ANYONE) -> SessionInfo:
        """The session back at exactly its state after ``steps`` tokens (inside its journal)."""
        return await self._apply_if_live(await self.rewind_deferred(session_id, steps, caller), live)

    async def fork_session(self, session_id: str, new_id: Optional[str], ttl: float, live: Live = always,
                           caller: Caller = ANYONE, remember: Optional[Remembrance] = None) -> SessionInfo:
        return await self._apply_if_live(await self.fork_deferred(session_id, new_id, ttl, caller), live, remember)

    async def import_session(self, blob: bytes, key: bytes, session_id: Optional[str], ttl: float,
                             live: Live = always, caller: Caller = ANYONE,
                             remember: Optional[Remembrance] = None) -> SessionInfo:
        return await self._apply_if_live(await self.import_deferred(blob, key, session_id, ttl, caller), live,
                                         remember)

    @staticmethod
    async def _apply_if_live(commit: RecordCommit, live: Live, remember: Optional[Remembrance] = None) -> SessionInfo:
        """Apply a checked record op only while its call is live: one that ends non-OK changed
        nothing (the late OK, a reply sent in time that arrives late, is the one window left;
        its retry with the request id gets this answer, kept with the commit)."""
        if not live():
            await commit(False)
            raise CallEnded("the call ended (cancelled or past its deadline) before it was applied")
        info = await commit(True, remember)
        assert info is not None
        return info


__all__ = ["CreateCommit", "EngineBase", "RecordCommit", "Remembering"]
