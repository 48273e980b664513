"""Drive hypothesis over fuzz sequences against one server and count what happens.

    stats = fuzz("127.0.0.1:50051", cases=300, seed=0, shrink=True)

``cases`` counts fuzzed requests; sequences are drawn until that many ran.
shrink=True (the test suite): the first failing sequence raises, after
hypothesis shrank it to a minimal one. shrink=False (make fuzz): every
sequence runs, failures are counted and the first few kept for the report.
"""
from __future__ import annotations

from typing import Callable, Optional

import grpc
from hypothesis import HealthCheck, Phase, given, seed as fixed_seed, settings

from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

from .calls import Caller, Stats
from .ops import CaseRunner
from .strategies import CASES, SLOTS


class _Stop(BaseException):
    """Ends the hypothesis run: enough cases ran, or the server died (not a test failure)."""


def fuzz(target: str, cases: int, seed: int = 0, shrink: bool = False,
         alive: Callable[[], bool] = lambda: True, progress: Optional[Callable[[Stats], None]] = None) -> Stats:
    stats = Stats()
    caller = Caller(stats)
    failing = []  # once a sequence failed (shrink mode), let hypothesis shrink it to the end
    # The default client limits (4 MiB replies, 16 KiB metadata): the fuzzer is a default client.
    channel = grpc.insecure_channel(target)
    runner = CaseRunner(channel, pb_grpc.LstmServiceStub(channel), caller, SLOTS)

    @fixed_seed(seed)
    @settings(max_examples=10 * cases, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink] if shrink else [Phase.generate])
    @given(CASES)
    def one_sequence(case) -> None:
        if stats.cases >= cases and not failing:
            raise _Stop()
        caller.case_failures = []
        stats.sequences += 1
        stats.cases += len(case.ops)
        runner.run(case)
        if not alive():
            caller.fail(stats.crashes, "the server process died")
            raise _Stop()
        if progress is not None:
            progress(stats)
        if shrink and caller.case_failures:
            failing.append(case)
            raise AssertionError("\n".join(caller.case_failures))

    try:
        one_sequence()
    except _Stop:
        pass
    finally:
        channel.close()
    return stats
