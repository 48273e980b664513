"""The small fuzz run of the test suite: a few hundred hypothesis cases
(call sequences over every lstm.v1 request message) against a live server
process, each fuzzed session checked against its twin. A failure is shrunk
by hypothesis to a minimal call sequence. ``make fuzz`` runs the long one."""
import os

import pytest

from .driver import fuzz
from .server import ServerProcess

CASES = int(os.environ.get("LSTM_FUZZ_CASES", "300"))  # fuzzed requests
SEED = int(os.environ.get("LSTM_FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with ServerProcess(tiny_model_dir) as running:
        yield running


def test_fuzzed_calls_never_crash_and_sessions_match_their_twins(server):
    stats = fuzz(server.target, CASES, seed=SEED, shrink=True, alive=server.alive)
    print(stats.report(server.error_lines()))
    assert stats.cases >= CASES
    assert not stats.failures(), stats.report()
    assert server.alive() and not server.tracebacks(), server.tracebacks()[:3]
