"""Request ids across the front <-> engine link (service/link/, service/core/request_ledger.py):
the engine keeps an answer with its commit, so a front call cancelled after the engine
applied its commit still has its answer kept (a retry gets it, nothing applies twice), and
a request id seen through one front is known through every other one (the engine owns it).

Real parts: the engine process's code on a thread of its own (svc_helpers.EngineThread),
real front Apps each with its own EngineLink over the real UNIX socket, real gRPC channels.
These are about fronts, so they run the same under ``make test`` and ``make test-fronts``."""
from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import List

import grpc

from lstm_service.service.link import messages as m
from lstm_service.service.link.engine_link import EngineLink, RequestCounts
from lstm_service.service.proc.app import App
from lstm_service.service.proc.config import Config
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc
from svc_helpers import EngineThread


@contextlib.asynccontextmanager
async def fronts(model_dir: Path, n: int, **overrides):
    """``n`` front Apps on one engine: (engine, [(app, stub), ...])."""
    config = Config(model=str(model_dir), port=0, device="cpu", **overrides)
    engine_thread = EngineThread(config, time.monotonic, None)
    apps: List[App] = []
    channels: List[grpc.aio.Channel] = []
    try:
        for i in range(n):
            app = App(config, link=EngineLink(engine_thread.address, f"front-{i}", counts=RequestCounts()))
            apps.append(app)
            port = await app.start()
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        yield engine_thread.process.engine, [(a, pb_grpc.LstmServiceStub(c)) for a, c in zip(apps, channels)]
    finally:
        for channel in channels:
            await channel.close()
        for app in apps:
            await app.stop(grace=0)
        engine_thread.stop()


def cancel_once_the_commit_applied(app: App, kinds=(m.CreateCommit, m.RecordCommit)) -> List[str]:
    """Force the window: the front's next commit of ``kinds`` reaches the engine and applies, and
    the front's call then waits, with the answer in, until its deadline cancels it (as a
    client's deadline or cancel landing just after the commit went out does). Returns the log
    of what was forced."""
    link, forced = app.link, []
    assert link is not None
    real = link.call

    async def call(request):
        reply = await real(request)
        if isinstance(request, kinds) and not forced:
            forced.append(type(request).__name__)
            await asyncio.sleep(60)  # cancelled by the call's deadline: the front never reads the answer
        return reply

    link.call = call  # type: ignore[method-assign]
    return forced


DEADLINE = 2.0  # seconds: ample to reach the commit, then the forced wait outlives it


async def ends_not_ok(call) -> None:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
        return
    raise AssertionError("the call ended OK")


async def total(stub) -> int:
    return (await stub.ListSessions(pb.ListSessionsRequest(limit=1))).total


async def test_a_front_call_cancelled_after_its_commit_applied_keeps_its_answer(tiny_model_dir):
    async with fronts(tiny_model_dir, 1) as (engine, [(app, stub)]):
        source = (await stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="ab")))).session.id
        for make, call in (
            (lambda: pb.CreateSessionRequest(prompt=pb.Input(text="xyz"), request_id="create-1"), stub.CreateSession),
            (lambda: pb.CreateSessionRequest(request_id="create-2"), stub.CreateSession),
            (lambda: pb.ForkSessionRequest(session_id=source, request_id="fork-1"), stub.ForkSession),
        ):
            before = await total(stub)
            forced = cancel_once_the_commit_applied(app)
            await ends_not_ok(call(make(), timeout=DEADLINE))
            assert forced, "the window was not forced"
            assert await total(stub) == before + 1  # the engine applied it
            again = await call(make())  # the retry, same id: the first answer, nothing applied again
            assert await total(stub) == before + 1
            assert engine.store.peek(again.session.id, "anonymous") is not None

        await stub.Predict(pb.PredictRequest(session_id=source, input=pb.Input(text="cd")))
        forced = cancel_once_the_commit_applied(app)
        reset = pb.ResetSessionRequest(session_id=source, request_id="reset-1")
        await ends_not_ok(stub.ResetSession(reset, timeout=DEADLINE))
        assert forced
        await stub.Predict(pb.PredictRequest(session_id=source, input=pb.Input(text="e")))
        assert (await stub.ResetSession(reset)).session.steps == 0  # the first answer, no second reset
        assert (await stub.GetSession(pb.GetSessionRequest(session_id=source))).session.steps == 1


async def test_a_request_id_seen_through_one_front_is_known_through_the_other(tiny_model_dir):
    async with fronts(tiny_model_dir, 2) as (engine, [(_, a), (_, b)]):
        create = pb.CreateSessionRequest(prompt=pb.Input(text="abc"), request_id="shared-create")
        first = await a.CreateSession(create)
        assert await b.CreateSession(create) == first and await total(b) == 1
        sid = first.session.id

        predict = pb.PredictRequest(session_id=sid, input=pb.Input(text="d"), request_id="shared-predict",
                                    output=pb.OutputOptions(logprobs=True))
        stepped = await a.Predict(predict)
        assert await b.Predict(predict) == stepped  # log-probs bitwise, applied once
        assert (await b.GetSession(pb.GetSessionRequest(session_id=sid))).session.steps == 4

        generate = pb.GenerateRequest(session_id=sid, sampling=pb.SamplingParams(max_tokens=6, seed=3),
                                      request_id="shared-generate")
        tokens = [t async for t in a.Generate(generate)]
        assert [t async for t in b.Generate(generate)] == tokens  # replayed, nothing generated again
        assert (await a.GetSession(pb.GetSessionRequest(session_id=sid))).session.steps == 10

        opened = pb.OpenStream(create=True, end_with_stream=False, request_id="shared-open")
        call = a.Stream()
        await call.write(pb.StreamRequest(open=opened))
        first_open = (await call.read()).opened
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
        call = b.Stream()
        await call.write(pb.StreamRequest(open=opened))
        assert (await call.read()).opened.id == first_open.id  # attached, not created again
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
        assert await total(a) == 2

        err = None
        try:
            await b.ResetSession(pb.ResetSessionRequest(session_id=sid, request_id="shared-create"))
        except grpc.aio.AioRpcError as exc:
            err = exc
        assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT  # another request, same id
