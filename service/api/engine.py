"""What the gRPC servicers (lstm.v1, KServe, Explain) see of an engine, shared by the
in-process ``Engine`` and the front processes' ``RemoteEngine`` (service/link/remote_engine.py).

Validation runs where the request is decoded (before anything crosses the link),
and the calls that commit "if the call is still live" are built here, once, from
their two-phase halves: the engine runs and holds the result, the caller checks
liveness where it knows it and settles.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from lstm_service.model.card import ModelCardError

from . import options as opts
from .errors import ConfigError
from ..edge.identity import ANYONE, Caller
from ..core.hold import CallEnded, Live, StepResult, always
from .options import GenerateOptions, StepOptions
from ..core.sessions import SessionInfo
from ..core.vocab import load_vocab


class EngineFace:
    runtime: Any  # what is served (precision, providers, path), for model descriptions

    def __init__(self, config, card) -> None:
        self.config = config
        self.card = card
        try:
            self.vocab = load_vocab(card)
        except (ModelCardError, OSError, ValueError) as exc:  # a missing, changed or malformed vocabulary file
            raise ConfigError(f"model {card.name!r}: its vocabulary cannot be loaded: {exc}") from exc

    # -- validation (before anything runs) -------------------------------------
    def tokens(self, tokens: Sequence[int], text: str, what: str = "input") -> np.ndarray:
        return self.vocab.encode(tokens, text, self.config.max_tokens_per_message, what)

    def step_options(self, top_k: Optional[int], all_positions: bool, logprobs: bool) -> StepOptions:
        return opts.step_options(top_k, all_positions, logprobs, self.vocab.size)

    def generate_options(self, max_tokens: int, temperature: Optional[float], top_k: int, top_p: Optional[float],
                         seed: Optional[int], stop: Sequence[str]) -> GenerateOptions:
        return opts.generate_options(max_tokens, temperature, top_k, top_p, seed, stop, self.vocab.size,
                                     self.config.max_generate_tokens)

    @property
    def zeros(self) -> Tuple[np.ndarray, ...]:
        """The zero state, one [L, H] array per part of the card's state."""
        shape = (self.card.layers, self.card.hidden_size)
        return tuple(np.zeros(shape, np.float32) for _ in self.card.state_names)

    # -- one-shot calls, from their two-phase halves ---------------------------------
    async def predict(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False,
                      expected_steps: Optional[int] = None, live: Live = always, caller: Caller = ANYONE) -> StepResult:
        """One step, kept only if ``live()`` still holds once its result is in."""
        result, settle = await self.predict_deferred(session_id, ids, options, start, expected_steps, caller)
        keep = live()
        settle(keep)
        if not keep:
            raise CallEnded("the call ended (cancelled or past its deadline) before its result was committed")
        return result

    async def create(self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray],
                     options: StepOptions, live: Live = always,
                     caller: Caller = ANYONE) -> Tuple[SessionInfo, Optional[StepResult]]:
        """A new session, prefilled with ``prompt`` if given. Nothing is created unless the
        whole call succeeds (no orphan whose id the client never learns)."""
        result, keep = await self.create_deferred(session_id, ttl, prompt, options, caller)
        if prompt is not None and not live():
            await keep(False)
            raise CallEnded("the call ended (cancelled or past its deadline) before the session was created")
        return await keep(True), result

    async def charge_tokens(self, n: int, caller: Caller = ANYONE) -> None:  # pragma: no cover - each engine
        """Spend ``n`` of the caller's --tokens-per-second-per-principal for model work outside a lease."""
        raise NotImplementedError

    async def stream_slot(self, caller: Caller = ANYONE) -> Any:  # pragma: no cover - each engine
        """Count a long-lived call without a session as one of the caller's open streams; ``.release()``."""
        raise NotImplementedError

    async def predict_deferred(self, session_id, ids, options, start=False, expected_steps=None,
                               caller: Caller = ANYONE):  # pragma: no cover - each engine has its own
        raise NotImplementedError

    async def create_deferred(self, session_id, ttl, prompt, options,
                              caller: Caller = ANYONE):  # pragma: no cover - each engine has its own
        raise NotImplementedError
