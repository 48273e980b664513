"""The at-limits strategy (limits.py) against a live server process: every answer to a request
with its strings and repeated fields at and past their limits stays within 1 KB of message and
4 KB of details trailer, the two requests the outside tester sent included. ``make fuzz`` draws
the same operation among the others and counts any answer over the bounds."""
import grpc
from hypothesis import HealthCheck, given, settings

from lstm_service.service.proto.inference import grpc_service_pb2 as kpb
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

from .calls import Caller, Stats
from .limits import AtLimits, limit_requests
from .ops import CaseRunner
from .server import ServerProcess
from .strategies import SLOTS, Op
from .twin import Book, TwinKeeper

EXAMPLES = 60


def _runner(target: str):
    stats = Stats()
    channel = grpc.insecure_channel(target)
    runner = CaseRunner(channel, pb_grpc.LstmServiceStub(channel), Caller(stats), SLOTS)
    runner.book = Book(SLOTS)
    return runner, stats, channel


def _the_testers_requests(model_name: str):
    infer = kpb.ModelInferRequest(model_name=model_name)
    for i in range(3000):
        infer.inputs.add(name=f"{i:05d}" + "n" * 300, datatype="INT64", shape=[1, 1])
    return [AtLimits("Explain", pb.ExplainRequest(input=pb.Input(text="ab"), layers=range(100_000))),
            AtLimits("ModelInfer", infer),
            # The opening creates a session under an id the server picks, kept past the stream; the step
            # after it is refused: the session is the fuzzer's to delete, not an orphan.
            AtLimits("Stream", pb.StreamStep(input=pb.Input(tokens=[10**6])),
                     pb.OpenStream(create=True, end_with_stream=False))]


def test_requests_at_their_limits_get_answers_within_the_bounds(tiny_model_dir):
    with ServerProcess(tiny_model_dir) as server:
        runner, stats, channel = _runner(server.target)
        try:
            for item in _the_testers_requests("tiny-lstm"):
                runner.run_op(Op("limits", None, item))

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(limit_requests())
            def one(item: AtLimits) -> None:
                runner.run_op(Op("limits", None, item))

            one()
            TwinKeeper(runner.stub, runner.caller, runner.book).check_all()  # strays deleted, no orphan
        finally:
            channel.close()
        assert stats.bounded >= 2 and not stats.oversize, stats.report()
        assert not stats.failures(), stats.report()
        assert server.alive() and not server.tracebacks(), server.tracebacks()[:3]
