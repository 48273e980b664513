"""The serving core, free of gRPC: steps, prefill and generation on sessions.

server.py decodes a request into plain values, calls one method here and
encodes what comes back. Every state change happens in one synchronous
``commit`` after the model result arrived, so anything that fails, is
rejected or is cancelled earlier leaves the session as it was.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import AsyncIterator, List, Optional, Sequence

import numpy as np

from .batcher import Batcher, StepOutput
from .errors import FailedPrecondition, InvalidArgument
from .sampling import Sampler, SamplingOptions
from .sessions import Session, SessionStore
from .vocab import Vocab

DEFAULT_TOP_K = 5
DEFAULT_MAX_TOKENS = 64
MAX_STOPS, MAX_STOP_BYTES = 16, 256


@dataclass(frozen=True)
class StepOptions:
    top_k: int = DEFAULT_TOP_K
    all_positions: bool = False
    logprobs: bool = False


@dataclass
class StepResult:
    session_id: str
    steps: int
    consumed: int
    output: StepOutput
    options: StepOptions

    @property
    def first_position(self) -> int:
        return self.consumed - len(self.output.top_ids)


@dataclass(frozen=True)
class GenerateOptions:
    max_tokens: int
    sampling: SamplingOptions
    stop: Sequence[bytes] = ()


@dataclass
class Generated:
    token: int
    piece: bytes
    text: str
    logprob: float
    steps: int
    finish: Optional[str]  # None until the last: "length" | "stop"


class Engine:
    def __init__(self, config, card, runtime, store: SessionStore, batcher: Batcher, metrics=None) -> None:
        self.config = config
        self.card = card
        self.runtime = runtime
        self.store = store
        self.batcher = batcher
        self.metrics = metrics
        self.vocab = Vocab(card.vocab_kind, card.vocab_size)
        self.scratch_active = 0  # stateless calls in flight

    def active(self) -> int:
        """Callers that may be sending steps now: held sessions and stateless calls."""
        return self.store.busy + self.scratch_active

    # -- validation (before anything runs) --------------------------------
    def tokens(self, tokens: Sequence[int], text: str, what: str = "input") -> np.ndarray:
        return self.vocab.encode(tokens, text, self.config.max_tokens_per_message, what)

    def step_options(self, top_k: Optional[int], all_positions: bool, logprobs: bool) -> StepOptions:
        k = DEFAULT_TOP_K if top_k is None else top_k
        if not 0 <= k <= self.vocab.size:
            raise InvalidArgument(f"top_k {k} is out of range: allowed 0 to {self.vocab.size}")
        return StepOptions(min(k, self.vocab.size), bool(all_positions), bool(logprobs))

    def generate_options(
        self, max_tokens: int, temperature: Optional[float], top_k: int, top_p: Optional[float],
        seed: Optional[int], stop: Sequence[str],
    ) -> GenerateOptions:
        limit = self.config.max_generate_tokens
        n = max_tokens or min(DEFAULT_MAX_TOKENS, limit)
        if not 1 <= n <= limit:
            raise InvalidArgument(f"max_tokens {n} is out of range: allowed 1 to {limit} (0: {DEFAULT_MAX_TOKENS})")
        t = 1.0 if temperature is None else float(temperature)
        if not 0.0 <= t <= 10.0 or t != t:
            raise InvalidArgument(f"temperature {t} is out of range: allowed 0 (greedy) to 10")
        if not 0 <= top_k <= self.vocab.size:
            raise InvalidArgument(f"top_k {top_k} is out of range: allowed 0 (no cut) to {self.vocab.size}")
        p = 1.0 if top_p is None else float(top_p)
        if not 0.0 < p <= 1.0:
            raise InvalidArgument(f"top_p {p} is out of range: allowed above 0 up to 1")
        if len(stop) > MAX_STOPS:
            raise InvalidArgument(f"{len(stop)} stop sequences; allowed at most {MAX_STOPS}")
        stops = [s.encode("utf-8") for s in stop]
        if any(not 1 <= len(s) <= MAX_STOP_BYTES for s in stops):
            raise InvalidArgument(f"each stop sequence must be 1 to {MAX_STOP_BYTES} UTF-8 bytes")
        return GenerateOptions(n, SamplingOptions(t, top_k, p, seed), tuple(stops))

    # -- steps -----------------------------------------------------------------
    async def step(self, session: Session, ids: np.ndarray, options: StepOptions, start: bool = False) -> StepResult:
        """Feed ``ids`` to a session the caller holds; commit; the prediction."""
        store = self.store
        if not session.alive:
            store.require_live(session)  # raises, with the message
        h, c = (store.zeros, store.zeros if store.has_cell_state else None) if start else (session.h, session.c)
        began = time.perf_counter()
        out = await self.batcher.run(ids, h, c, options.all_positions, options.top_k)
        if start:
            store.clear(session)
        n = len(ids)
        store.commit(session, out.h, out.c, out.last, n)
        if self.metrics:
            self.metrics.step(time.perf_counter() - began, n)
        return StepResult(session.id, session.steps, n, out, options)

    def scratch(self) -> Session:
        """A session outside the store, for stateless calls; nothing is kept."""
        s = self.store
        return Session("", s.zeros, s.zeros if s.has_cell_state else None, 0.0, 0.0, 0.0)

    async def predict(self, session_id: str, ids: np.ndarray, options: StepOptions, start: bool = False) -> StepResult:
        if not session_id:
            return await self.step_scratch(ids, options)
        session = self.store.acquire(session_id)
        try:
            return await self.step(session, ids, options, start)
        finally:
            self.store.release(session)

    async def step_scratch(self, ids: np.ndarray, options: StepOptions) -> StepResult:
        session = self.scratch()
        self.scratch_active += 1
        try:
            out = await self.batcher.run(ids, session.h, session.c, options.all_positions, options.top_k)
        finally:
            self.scratch_active -= 1
        return StepResult("", len(ids), len(ids), out, options)

    async def create(
        self, session_id: Optional[str], ttl: float, prompt: Optional[np.ndarray], options: StepOptions
    ) -> "tuple[Session, Optional[StepResult]]":
        """A new session, prefilled with ``prompt`` in one model call if given."""
        if prompt is None:
            return self.store.create(session_id, ttl), None
        self.store.check_ttl(ttl)
        if session_id:
            self.store.check_new_id(session_id)
        zero = self.scratch()
        self.scratch_active += 1
        try:
            out = await self.batcher.run(prompt, zero.h, zero.c, options.all_positions, options.top_k)
        finally:
            self.scratch_active -= 1
        session = self.store.create(session_id, ttl)  # raises before anything is kept
        self.store.commit(session, out.h, out.c, out.last, len(prompt))
        return session, StepResult(session.id, session.steps, len(prompt), out, options)

    # -- generation --------------------------------------------------------------
    async def generate(
        self, session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions
    ) -> AsyncIterator[Generated]:
        """Sample tokens one at a time, each fed back into the session before it is yielded.

        Use with ``contextlib.aclosing`` so the session is released on cancel.
        """
        session = self.store.acquire(session_id) if session_id else self.scratch()
        self.scratch_active += 0 if session_id else 1
        try:
            logprobs = session.last_logprobs
            if prompt is None and logprobs is None:
                raise FailedPrecondition(
                    "nothing to continue from: the session has consumed no token yet; send a prompt"
                    if session_id else "a prompt is required when generating without a session"
                )
            if prompt is not None:
                logprobs = (await self.step(session, prompt, StepOptions(top_k=0))).output.last
            sampler = Sampler(options.sampling)
            decoder = self.vocab.decoder()
            tail = bytearray()  # the last bytes generated, for stop sequences
            keep = max((len(s) for s in options.stop), default=0)
            one = StepOptions(top_k=0)
            for i in range(options.max_tokens):
                token = sampler.sample(logprobs)
                logprob = float(logprobs[token])
                ids = np.array([token], dtype=np.int64)
                logprobs = (await self.step(session, ids, one)).output.last
                piece = self.vocab.pieces[token]
                finish = "length" if i + 1 == options.max_tokens else None
                if keep:
                    tail += piece
                    del tail[:-keep]
                    if any(tail.endswith(s) for s in options.stop):
                        finish = "stop"
                text = decoder.feed(token, final=finish is not None)
                yield Generated(token, piece, text, logprob, session.steps, finish)
                if finish:
                    return
        finally:
            if session_id:
                self.store.release(session)
            else:
                self.scratch_active -= 1

    def sessions(self, limit: int) -> List[Session]:
        return self.store.list(limit)
