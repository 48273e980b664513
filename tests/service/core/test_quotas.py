"""Per-principal quotas (service/quotas.py) without a server: the limits, the token bucket on an
injected clock, and what a refusal spends (nothing)."""
from __future__ import annotations

import pytest

from lstm_service.service.api.errors import ResourceExhausted
from lstm_service.service.core.quotas import Quotas


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_zero_switches_every_limit_off():
    quotas = Quotas()
    quotas.check_sessions("alice", 10**6)
    for _ in range(1000):
        quotas.open_stream("alice")
    quotas.take_tokens("alice", 10**9)


def test_sessions_are_refused_at_the_limit_with_the_flag_named():
    quotas = Quotas(sessions=2)
    quotas.check_sessions("alice", 1)
    with pytest.raises(ResourceExhausted) as info:
        quotas.check_sessions("alice", 2)
    assert info.value.reason == "PRINCIPAL_SESSIONS" and "--max-sessions-per-principal 2" in info.value.message


def test_streams_count_per_principal_and_a_slot_closes_once():
    quotas = Quotas(streams=2)
    first = quotas.stream_slot("alice")
    quotas.open_stream("alice")
    quotas.open_stream("bob")  # bob has his own count
    with pytest.raises(ResourceExhausted) as info:
        quotas.open_stream("alice")
    assert info.value.reason == "PRINCIPAL_STREAMS" and "2 streams open" in info.value.message
    first.release()
    first.release()  # again: a no-op, not a second close
    assert quotas.open_streams["alice"] == 1
    quotas.open_stream("alice")  # the slot it freed
    quotas.close_stream("alice")
    quotas.close_stream("alice")
    assert "alice" not in quotas.open_streams  # no zero entries left behind


def test_the_token_bucket_refills_at_the_rate_and_a_refusal_spends_nothing():
    clock = Clock()
    quotas = Quotas(tokens_per_second=10, burst=20, clock=clock)
    quotas.take_tokens("alice", 20)  # the whole burst at once
    with pytest.raises(ResourceExhausted) as info:
        quotas.take_tokens("alice", 5)
    assert info.value.reason == "PRINCIPAL_RATE" and info.value.retry_after_ms == 501  # 5 tokens at 10/s, rounded up
    clock.now += 0.5  # 5 tokens back
    quotas.take_tokens("alice", 5)  # the refused call spent nothing
    quotas.take_tokens("bob", 20)  # bob's bucket is his own
    clock.now += 3600
    quotas.take_tokens("alice", 20)  # refills to the burst, never past it
    with pytest.raises(ResourceExhausted):
        quotas.take_tokens("alice", 1)


def test_the_burst_defaults_to_one_seconds_worth():
    quotas = Quotas(tokens_per_second=8, clock=Clock())
    assert quotas.burst == 8.0
    assert Quotas(tokens_per_second=0.5).burst == 1.0  # at least one token, or nothing could ever run
