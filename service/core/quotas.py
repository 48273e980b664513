"""Per-principal limits, so one client cannot starve or crowd out the rest:
sessions held, streams open at once, and tokens fed per second (a token
bucket). Every long-lived call counts as a stream (Stream, Generate,
KServe ModelStreamInfer), and every token a principal makes the model process
counts once against its rate (steps, prompts, generated tokens, Explain).
Every refusal is RESOURCE_EXHAUSTED naming the limit, with a retry hint
where waiting helps. 0 switches a limit off.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Dict, Optional, Tuple

from ..api.errors import ResourceExhausted


class Quotas:
    def __init__(self, sessions: int = 0, streams: int = 0, tokens_per_second: float = 0.0, burst: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions = sessions
        self.streams = streams
        self.rate = tokens_per_second
        self.burst = float(burst or max(tokens_per_second, 1.0))
        self.clock = clock
        self.open_streams: Counter = Counter()
        self._buckets: Dict[str, Tuple[float, float]] = {}  # principal -> (tokens left, when)

    def check_sessions(self, principal: str, held: int) -> None:
        if self.sessions and held >= self.sessions:
            raise ResourceExhausted(
                f"you hold {held} sessions, the most one principal may (--max-sessions-per-principal "
                f"{self.sessions}); delete some first", reason="PRINCIPAL_SESSIONS")

    def open_stream(self, principal: str) -> None:
        if self.streams and self.open_streams[principal] >= self.streams:
            raise ResourceExhausted(
                f"you have {self.open_streams[principal]} streams open, the most one principal may "
                f"(--max-streams-per-principal {self.streams}); end one first", reason="PRINCIPAL_STREAMS")
        self.open_streams[principal] += 1

    def stream_slot(self, principal: str) -> "StreamSlot":
        """``open_stream`` for a call that holds no session; its slot's ``release`` closes it."""
        self.open_stream(principal)
        return StreamSlot(lambda: self.close_stream(principal))

    def close_stream(self, principal: str) -> None:
        self.open_streams[principal] -= 1
        if self.open_streams[principal] <= 0:
            del self.open_streams[principal]

    def take_tokens(self, principal: str, n: int) -> None:
        """Spend ``n`` tokens of the principal's bucket, or refuse (nothing spent)."""
        if not self.rate:
            return
        now = self.clock()
        left, when = self._buckets.get(principal, (self.burst, now))
        left = min(self.burst, left + (now - when) * self.rate)
        if n > left:
            wait_ms = int(1000 * (n - left) / self.rate) + 1
            self._buckets[principal] = (left, now)
            raise ResourceExhausted(
                f"{n} tokens is over your rate (--tokens-per-second-per-principal {self.rate:g}, burst "
                f"{self.burst:g}); retry in about {wait_ms} ms", retry_after_ms=wait_ms, reason="PRINCIPAL_RATE")
        self._buckets[principal] = (left - n, now)


class StreamSlot:
    """One open stream counted against a principal's --max-streams-per-principal; ``release``
    (once; again is a no-op) when the call ends."""

    def __init__(self, close: Callable[[], None]) -> None:
        self._close: Optional[Callable[[], None]] = close

    def release(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()
