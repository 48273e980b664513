"""Request ids (AIP-155): the answer of each mutating call that carried one and applied,
kept per (principal, request_id) for a bounded window, so a retry gets the first call's
answer and applies nothing twice. The engine owns it, so every front shares it.

The answer is kept by the engine in the same synchronous stretch as the commit it answers
(``keep`` right after the commit, no await between), in both server modes: a call cannot
apply without its answer being kept, whatever happens to the call afterwards (a cancel,
a deadline, a lost reply, the commit's message on its way over the link).

What is kept (api/values.py Kept): the reply as far as the edge encoded it before the
commit, the session record the commit gave (create, reset, delete, fork, import, a
stream's open), and a Generate's tokens, each appended as it is committed. A fingerprint
of the request (its method and body without the id) refuses the same id for another
request. Bounds per principal: WINDOW seconds, the last MAX_IDS ids and MAX_BYTES of
answers, whichever is reached first (the oldest go first). A call that changed nothing
is not kept: its retry simply runs.
"""
from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Dict, Optional

from ..api.engine_base import RecordCommit
from ..api.errors import InvalidArgument, quote
from ..api.values import ANYONE, Caller, DeferredCommit, Generated, Kept, Remembrance, SessionInfo

if TYPE_CHECKING:
    from .hold import Hold, Pending

WINDOW = 600.0  # seconds an answer is kept
MAX_IDS = 1000  # per principal
MAX_BYTES = 4 << 20  # of answers, per principal
ENTRY_OVERHEAD = 200  # bytes an entry costs besides its answer (key, fingerprint, dict slot), for the bound
INFO_BYTES = 150  # a kept session record
TOKEN_OVERHEAD = 120  # a kept Generate token besides its piece and text


@dataclass(slots=True)
class Outcome:
    fingerprint: bytes
    kept: Kept
    at: float
    nbytes: int


def token_bytes(g: Generated) -> int:
    return TOKEN_OVERHEAD + len(g.piece) + len(g.text)


class PrincipalLedger:
    def __init__(self) -> None:
        self.outcomes: "OrderedDict[str, Outcome]" = OrderedDict()  # oldest first
        self.bytes = 0

    def drop_oldest(self) -> None:
        _, outcome = self.outcomes.popitem(last=False)
        self.bytes -= outcome.nbytes


class RequestLedger:
    def __init__(self, clock: Callable[[], float] = time.monotonic, window: float = WINDOW,
                 max_ids: int = MAX_IDS, max_bytes: int = MAX_BYTES) -> None:
        self.clock = clock
        self.window, self.max_ids, self.max_bytes = window, max_ids, max_bytes
        self._by_principal: Dict[str, PrincipalLedger] = {}

    def _expire(self, ledger: PrincipalLedger) -> None:
        cutoff = self.clock() - self.window
        while ledger.outcomes and next(iter(ledger.outcomes.values())).at < cutoff:
            ledger.drop_oldest()

    def recall(self, principal: str, request_id: str, fingerprint: bytes) -> Optional[Kept]:
        """What the first call kept, or None (not seen in the window). INVALID_ARGUMENT if the id
        was used for another request."""
        ledger = self._by_principal.get(principal)
        if ledger is None:
            return None
        self._expire(ledger)
        outcome = ledger.outcomes.get(request_id)
        if outcome is None:
            return None
        if outcome.fingerprint != fingerprint:
            raise InvalidArgument(
                f"request_id {quote(request_id)} was used for a different request in the last "
                f"{int(self.window)} s; a retry must resend the same request, a new call needs a new id",
                reason="REQUEST_ID_REUSED", field="request_id")
        return outcome.kept

    def keep(self, principal: str, remember: Remembrance, info: Optional[SessionInfo] = None,
             running: bool = False) -> Optional[Kept]:
        """Keep a call's answer right after its commit (once: a first answer is never replaced;
        then None). The Kept returned is the one a Generate appends its tokens to."""
        ledger = self._by_principal.setdefault(principal, PrincipalLedger())
        self._expire(ledger)
        if remember.request_id in ledger.outcomes:
            return None
        kept = Kept(remember.answer, info, running=running)
        nbytes = len(remember.answer) + ENTRY_OVERHEAD + (INFO_BYTES if info is not None else 0)
        ledger.outcomes[remember.request_id] = Outcome(remember.fingerprint, kept, self.clock(), nbytes)
        ledger.bytes += nbytes
        self._bound(principal, ledger)
        return kept

    def add_token(self, principal: str, request_id: str, kept: Kept, g: Generated) -> None:
        """Append a Generate's token to its kept answer, right after the token's commit."""
        kept.tokens.append(g)
        ledger = self._by_principal.get(principal)
        outcome = ledger.outcomes.get(request_id) if ledger is not None else None
        if ledger is None or outcome is None or outcome.kept is not kept:
            return  # dropped by the bounds: a retry runs afresh (the window's documented edge)
        outcome.nbytes += token_bytes(g)
        ledger.bytes += token_bytes(g)
        self._bound(principal, ledger)

    def finished(self, kept: Kept) -> None:
        """A Generate's last token was kept (or it ended): its retry replays what it kept."""
        kept.running = False

    def _bound(self, principal: str, ledger: PrincipalLedger) -> None:
        while ledger.outcomes and (len(ledger.outcomes) > self.max_ids or ledger.bytes > self.max_bytes):
            ledger.drop_oldest()
        if not ledger.outcomes:
            del self._by_principal[principal]

    def knows(self, principal: str, request_id: str) -> bool:
        """Whether an answer is kept under ``request_id`` (for tests and the bench)."""
        ledger = self._by_principal.get(principal)
        return ledger is not None and request_id in ledger.outcomes

    def __len__(self) -> int:
        return sum(len(ledger.outcomes) for ledger in self._by_principal.values())


class AnswersKept:
    """The engine's side of request ids (mixed into core.engine.Engine, before SessionRecords,
    whose record ops' commits it wraps): each call's answer kept under its request id in the
    same synchronous stretch as its commit. Every commit wrapped here has no await inside,
    so nothing runs between the commit and the keeping, in either server mode (with
    --fronts, the engine host calls these with the id the commit's message carried)."""

    ledger: RequestLedger

    async def recall(self, request_id: str, fingerprint: bytes, caller: Caller = ANYONE) -> Optional[Kept]:
        return self.ledger.recall(caller.principal, request_id, fingerprint)

    def remembering(self, commit: Callable[[bool], Awaitable[Optional[SessionInfo]]],
                    caller: Caller) -> RecordCommit:
        """``commit(wanted, remember=None)``: ``commit``, then the answer (the session record it
        gave) kept under the request id."""
        async def remembered(wanted: bool = True, remember: Optional[Remembrance] = None) -> Optional[SessionInfo]:
            info = await commit(wanted)
            if info is not None and remember is not None:
                self.ledger.keep(caller.principal, remember, info)
            return info

        return remembered

    def deferred_commit(self, hold: "Hold", pending: "Pending") -> DeferredCommit:
        """A held step's ``commit(wanted, remember=None)``, the answer kept with the commit."""
        commit, session = hold.deferred_commit(pending), hold.session

        def remembered(wanted: bool, remember: Optional[Remembrance] = None) -> None:
            applies = wanted and (session is None or session.alive)
            commit(wanted)
            if applies and remember is not None:
                self.ledger.keep(hold.caller.principal, remember)

        return remembered

    async def kept_tokens(self, tokens: AsyncIterator[Generated], remember: Remembrance,
                          caller: Caller) -> AsyncIterator[Generated]:
        """A Generate's tokens, each appended to its request id's answer right after its commit
        (the token is committed as the generator yields it). Kept from the first token on: a
        Generate that kept none changed nothing, and its retry runs afresh."""
        kept: Optional[Kept] = None
        try:
            async with contextlib.aclosing(tokens):  # type: ignore[type-var]
                async for g in tokens:
                    if kept is None:
                        kept = self.ledger.keep(caller.principal, remember, running=True) or Kept(b"")
                    self.ledger.add_token(caller.principal, remember.request_id, kept, g)
                    yield g
        finally:
            if kept is not None:
                self.ledger.finished(kept)

    # the record ops' commits (core/session_records.py), wrapped to keep their answers
    async def reset_deferred(self, session_id: str, caller: Caller = ANYONE) -> RecordCommit:
        return self.remembering(await super().reset_deferred(session_id, caller), caller)  # type: ignore[misc]

    async def delete_deferred(self, session_id: str, caller: Caller = ANYONE) -> RecordCommit:
        return self.remembering(await super().delete_deferred(session_id, caller), caller)  # type: ignore[misc]

    async def fork_deferred(self, session_id: str, new_id: Optional[str], ttl: float,
                            caller: Caller = ANYONE) -> RecordCommit:
        return self.remembering(await super().fork_deferred(session_id, new_id, ttl, caller),  # type: ignore[misc]
                                caller)

    async def import_deferred(self, blob: bytes, key: bytes, session_id: Optional[str], ttl: float,
                              caller: Caller = ANYONE) -> RecordCommit:
        return self.remembering(await super().import_deferred(  # type: ignore[misc]
            blob, key, session_id, ttl, caller), caller)
