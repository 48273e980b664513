"""Admission of calls (service/admission.py) without a server: calls in flight are counted,
every call's status is recorded, and draining refuses new calls with a retry hint."""
from __future__ import annotations

from collections import Counter

import pytest

from lstm_service.service.edge.admission import Admission
from lstm_service.service.api.errors import Unavailable


class Counts:
    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def request(self, method: str, code: str) -> None:
        self.counts[(method, code)] += 1


async def test_calls_are_counted_in_and_out_and_draining_refuses_new_ones():
    counts = Counts()
    admission = Admission(counts)
    assert admission.admit() and admission.admit()
    assert admission.in_flight == 2
    admission.finish("Predict", "OK", True)
    admission.start_draining()
    with pytest.raises(Unavailable) as info:
        admission.admit()
    assert info.value.retry_after_ms == 100 and "shutting down" in info.value.message
    admission.finish("Stream", "UNAVAILABLE", False)  # refused before it was admitted: not in flight
    assert admission.in_flight == 1
    assert counts.counts == Counter({("Predict", "OK"): 1, ("Stream", "UNAVAILABLE"): 1})
