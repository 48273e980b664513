"""A fuzzed Stream call, driven in lock-step (write one request, read its
answer) so the fuzzer knows which steps were answered, which one was in
flight when it cancelled or the deadline hit, and what to replay."""
from __future__ import annotations

import queue

import grpc

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

from .calls import C, predictions_problem
from .strategies import Op
from .twin import GONE, token_ids


class _Requests:
    """The request iterator grpc reads from its own thread; ``None`` half-closes."""

    def __init__(self) -> None:
        self.queue: "queue.Queue" = queue.Queue()

    def __iter__(self):
        while (item := self.queue.get()) is not None:
            yield item

    def send(self, item) -> None:
        self.queue.put(item)


def run_stream(runner, op: Op) -> None:
    open_ = pb.OpenStream()
    open_.CopyFrom(op.request)
    open_.session_id = runner._id(op.session)
    steps, cancel_after = op.extra
    twin = None if open_.create else runner._twin(op.session)
    timeout = op.call.timeout
    if open_.create:
        runner.book.strays.add(open_.session_id)
        if not open_.session_id:
            timeout = None  # a deadline could orphan a server-named session before its id arrives
    meta, disagree = runner._meta(op, open_.session_id)
    requests = _Requests()
    runner.caller.stats.calls += 1
    call = runner.stub.Stream(iter(requests), timeout=timeout, metadata=meta)
    requests.send(pb.StreamRequest(open=open_))
    code, error, in_flight, was_opened = C.OK, None, None, False
    try:
        opened = next(call).opened
        was_opened = True
        if open_.create:
            runner.book.strays.add(opened.id)
        elif twin is not None and open_.HasField("end_with_stream") and open_.end_with_stream:
            _ends_with_stream(runner, op, twin)  # S goes when the stream ends: T goes now
            twin = None
        for index, step in enumerate(steps):
            request = pb.StreamStep()
            request.CopyFrom(step)
            runner._expected(request, twin)
            requests.send(pb.StreamRequest(step=request))
            in_flight = request
            if cancel_after == index:
                call.cancel()
                next(call)  # raises CANCELLED
            result = next(call).result
            in_flight = None
            options = request.output if request.HasField("output") else (
                open_.output if open_.HasField("output") else None)
            problem = predictions_problem(options, len(token_ids(request.input)), result)
            if problem:
                runner.caller.mismatch(f"Stream step reply: {problem}")
            twin = _answered(runner, op, twin, request, result)
        if cancel_after == len(steps):
            call.cancel()
        requests.send(None)
        for response in call:
            runner.caller.mismatch(f"Stream: an answer nobody asked for: {str(response)[:200]}")
    except StopIteration:
        runner.caller.mismatch("Stream: the server ended the stream without answering a request")
    except grpc.RpcError as exc:
        code, error = exc.code(), exc
    finally:
        requests.send(None)
    runner._judge("Stream", code, error, op, disagree,
                  {C.CANCELLED} if cancel_after is not None else ())
    if not was_opened and twin is not None and code == C.DEADLINE_EXCEEDED and open_.end_with_stream:
        _resolve_open(runner, op, twin)
        return
    if twin is None or in_flight is None or code not in (C.CANCELLED, C.DEADLINE_EXCEEDED):
        return
    if runner._wrong_expectation(in_flight, twin, code, op, ended=in_flight.end):
        return
    if not runner.twins.resolve_step(twin, token_ids(in_flight.input), in_flight.start, "Stream step", in_flight.end):
        runner.book.slots[op.session.index] = None


def _resolve_open(runner, op: Op, twin) -> None:
    """A stream that was to end S with it ran out of time before its `opened` arrived. The
    server may have opened it and written `opened` just before the deadline (as a step can be
    kept just before it: a late commit); then S ended with the stream. Either is allowed."""
    if runner.twins.steps_now(twin.s, may_be_gone=True) == GONE:
        runner.caller.stats.late_accepted += 1
        _ends_with_stream(runner, op, twin)


def _ends_with_stream(runner, op: Op, twin) -> None:
    runner.book.strays.add(twin.s)  # may still be listed for a moment after the stream ends
    runner.twins._must("DeleteSession", lambda: runner.stub.DeleteSession(
        pb.DeleteSessionRequest(session_id=twin.t)), "end with stream")
    runner.book.slots[op.session.index] = None


def _answered(runner, op: Op, twin, request: pb.StreamStep, result: pb.StepResult):
    """Check one answered step and replay it on the twin; the twin that remains."""
    ids = token_ids(request.input)
    if twin is None:
        return twin
    if runner._wrong_expectation(request, twin, C.OK, op, ended=request.end):
        return twin if runner.book.slots[op.session.index] is not None else None
    after = len(ids) if request.start else twin.steps + len(ids)
    if result.steps != after or result.consumed != len(ids) or result.tag != request.tag:
        runner.caller.mismatch(f"Stream step answered steps {result.steps}, consumed {result.consumed}, tag "
                               f"{result.tag!r}; expected {after}, {len(ids)}, {request.tag!r}")
    runner.twins.step(twin, ids, request.start)
    if request.end:  # the server deleted S after answering: delete T too
        runner.twins._must("DeleteSession", lambda: runner.stub.DeleteSession(
            pb.DeleteSessionRequest(session_id=twin.t)), "sequence end")
        runner.book.slots[op.session.index] = None
        return None
    return twin


def run_busy(runner, op: Op) -> None:
    """Hold S with an open stream, send a second writer to it, then let go."""
    twin = runner._twin(op.session)
    if twin is None:
        return
    requests = _Requests()
    holder = runner.stub.Stream(iter(requests))
    requests.send(pb.StreamRequest(open=pb.OpenStream(session_id=twin.s)))
    try:
        next(holder)
    except grpc.RpcError as exc:
        runner.caller.mismatch(f"could not attach a stream to an idle fuzzed session: {exc.code().name}")
        requests.send(None)
        return
    second = {
        "predict": lambda: runner.stub.Predict(pb.PredictRequest(session_id=twin.s, input=pb.Input(tokens=[1]))),
        "generate": lambda: list(runner.stub.Generate(pb.GenerateRequest(
            session_id=twin.s, prompt=pb.Input(tokens=[1]), sampling=pb.SamplingParams(max_tokens=2)))),
        "reset": lambda: runner.stub.ResetSession(pb.ResetSessionRequest(session_id=twin.s)),
        "delete": lambda: runner.stub.DeleteSession(pb.DeleteSessionRequest(session_id=twin.s)),
        "stream": lambda: list(runner.stub.Stream(iter([pb.StreamRequest(open=pb.OpenStream(session_id=twin.s))]))),
    }[op.request]
    code, reply = runner.caller.call("busy " + op.request, second)
    runner.caller.stats.statuses[("busy " + op.request, code.name)] += 1
    if code != C.ABORTED:
        runner.caller.fail(runner.caller.stats.unexpected, f"a second writer on a held session got {code.name}, "
                                                           "not ABORTED")
    requests.send(None)
    for _ in holder:
        pass
