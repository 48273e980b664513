"""Request ids (AIP-155): the answer of each OK mutating call that carried one, kept per
(principal, request_id) for a bounded window, so a retry gets the first call's answer
and applies nothing twice. The engine owns it, so every front shares it.

What is kept is the call's encoded reply (the edge encodes and decodes it) and a
fingerprint of the request (its method and body without the id): the same id with
another body is refused. Bounds per principal: WINDOW seconds, the last MAX_IDS ids and
MAX_BYTES of answers, whichever is reached first (the oldest go first). A call that
ended non-OK changed nothing and is not kept: its retry simply runs.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from ..api.errors import InvalidArgument, quote

WINDOW = 600.0  # seconds an answer is kept
MAX_IDS = 1000  # per principal
MAX_BYTES = 4 << 20  # of answers, per principal
ENTRY_OVERHEAD = 200  # bytes an entry costs besides its answer (key, fingerprint, dict slot), for the bound


@dataclass(slots=True)
class Outcome:
    fingerprint: bytes
    answer: bytes
    at: float


class PrincipalLedger:
    def __init__(self) -> None:
        self.outcomes: "OrderedDict[str, Outcome]" = OrderedDict()  # oldest first
        self.bytes = 0

    def drop_oldest(self) -> None:
        _, outcome = self.outcomes.popitem(last=False)
        self.bytes -= len(outcome.answer) + ENTRY_OVERHEAD


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

    def recall(self, principal: str, request_id: str, fingerprint: bytes) -> Optional[bytes]:
        """The first call's answer, or None (not seen in the window). INVALID_ARGUMENT if the id
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
        return outcome.answer

    def remember(self, principal: str, request_id: str, fingerprint: bytes, answer: bytes) -> None:
        """Keep an OK call's answer (once: a first answer is never replaced)."""
        ledger = self._by_principal.setdefault(principal, PrincipalLedger())
        self._expire(ledger)
        if request_id in ledger.outcomes:
            return
        ledger.outcomes[request_id] = Outcome(fingerprint, answer, self.clock())
        ledger.bytes += len(answer) + ENTRY_OVERHEAD
        while ledger.outcomes and (len(ledger.outcomes) > self.max_ids or ledger.bytes > self.max_bytes):
            ledger.drop_oldest()
        if not ledger.outcomes:
            del self._by_principal[principal]

    def knows(self, principal: str, request_id: str) -> bool:
        """Whether an OK answer is kept under ``request_id`` (for tests and the bench)."""
        ledger = self._by_principal.get(principal)
        return ledger is not None and request_id in ledger.outcomes

    def __len__(self) -> int:
        return sum(len(ledger.outcomes) for ledger in self._by_principal.values())
