"""Reset, Delete, Create (with and without a prompt), Fork and Import apply only while
their call is live, as Predict commits: a call that ends DEADLINE_EXCEEDED changed
nothing. The old server applied them anyway (9 of 10 timed-out Resets had reset the
session; a timed-out Create/Fork/Import left a session whose id the client never
learned, counted against its quota until its TTL).

Each test fires calls with 0.1-4 ms deadlines, and after every DEADLINE_EXCEEDED
checks, with ordinary calls, that the server holds what it held before, or that the
call was a late OK (kept under its request id; its retry gets the first answer). Runs in both
server modes (LSTM_TEST_FRONTS=1: a front process and an engine)."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Awaitable, Callable

import grpc

from lstm_service.service.api.values import ANONYMOUS
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from svc_helpers import serving

WANTED = 25  # timed-out calls per test: the old server applied most of them
ATTEMPTS = 3000


async def sessions_total(stub) -> int:
    return (await stub.ListSessions(pb.ListSessionsRequest(limit=1))).total


async def steps_of(stub, sid: str) -> int:
    """The session's steps; -1 once it is gone."""
    try:
        return (await stub.GetSession(pb.GetSessionRequest(session_id=sid))).session.steps
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return -1


async def timed_out_calls_change_nothing(s, call: Callable[[float, str], Awaitable[object]],
                                         observe: Callable[[], Awaitable[object]],
                                         undo: Callable[[object], Awaitable[None]], seed: int) -> None:
    """``call(timeout, request_id)`` until WANTED of them end DEADLINE_EXCEEDED; after each,
    ``observe()`` must equal what it was before, or the call was a late OK: an OK reply sent
    in time that reached the client after its deadline. Then the server kept its answer under
    its request id, and the retry with that id gets it, applying nothing again. An OK reply's
    effect is undone (``undo(reply)``)."""
    rng = random.Random(seed)
    before = await observe()
    exceeded, applied = 0, []
    for attempt in range(ATTEMPTS):
        request_id = f"attempt-{seed}-{attempt}"
        try:
            reply = await call(rng.uniform(0.0001, 0.004), request_id)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (exc.code(), exc.details())
            exceeded += 1
            await asyncio.sleep(0.005)  # a call still on its way to the server arrives (and must do nothing)
            now = await observe()
            if now == before:
                if exceeded >= WANTED:
                    break
                continue
            if not s.engine.ledger.knows(ANONYMOUS, request_id):  # applied, yet never answered OK
                applied.append((attempt, before, now))
                break
            reply = await call(30.0, request_id)  # the late OK's retry: its first answer, applied once
            assert await observe() == now
        await undo(reply)
        assert await observe() == before
    assert exceeded >= 10, f"only {exceeded} calls ran out of time; the test proves nothing"
    assert not applied, f"a DEADLINE_EXCEEDED call had taken effect: {applied}"


async def test_a_timed_out_reset_leaves_the_session_as_it_was(tiny_model_dir: Path):
    async with serving(tiny_model_dir) as s:
        sid = "reset-while-live-01"
        await s.stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(text="abc")))

        async def undo(_reply) -> None:
            await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="abc")))

        await timed_out_calls_change_nothing(
            s, lambda t, r: s.stub.ResetSession(pb.ResetSessionRequest(session_id=sid, request_id=r), timeout=t),
            lambda: steps_of(s.stub, sid), undo, seed=1)


async def test_a_timed_out_delete_leaves_the_session(tiny_model_dir: Path):
    async with serving(tiny_model_dir) as s:
        sid = "delete-while-live-01"
        await s.stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(text="abc")))

        async def undo(_reply) -> None:
            await s.stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(text="abc")))

        await timed_out_calls_change_nothing(
            s, lambda t, r: s.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid, request_id=r), timeout=t),
            lambda: steps_of(s.stub, sid), undo, seed=2)


async def _delete_new(stub, reply) -> None:
    await stub.DeleteSession(pb.DeleteSessionRequest(session_id=reply.session.id))


async def test_a_timed_out_create_without_a_prompt_creates_nothing(tiny_model_dir: Path):
    async with serving(tiny_model_dir) as s:
        await timed_out_calls_change_nothing(
            s, lambda t, r: s.stub.CreateSession(pb.CreateSessionRequest(request_id=r), timeout=t),
            lambda: sessions_total(s.stub), lambda r: _delete_new(s.stub, r), seed=3)


async def test_a_timed_out_create_with_a_prompt_creates_nothing(tiny_model_dir: Path):
    async with serving(tiny_model_dir) as s:
        await timed_out_calls_change_nothing(
            s, lambda t, r: s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="hello"), request_id=r),
                                                 timeout=t),
            lambda: sessions_total(s.stub), lambda r: _delete_new(s.stub, r), seed=4)


async def test_a_timed_out_fork_creates_nothing(tiny_model_dir: Path):
    async with serving(tiny_model_dir) as s:
        sid = "fork-while-live-01"
        await s.stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(text="abc")))
        await timed_out_calls_change_nothing(
            s, lambda t, r: s.stub.ForkSession(pb.ForkSessionRequest(session_id=sid, request_id=r), timeout=t),
            lambda: sessions_total(s.stub), lambda r: _delete_new(s.stub, r), seed=5)


async def test_a_timed_out_import_creates_nothing(tiny_model_dir: Path, tmp_path: Path):
    key = tmp_path / "session.key"
    key.write_bytes(b"k" * 32)
    async with serving(tiny_model_dir, session_key_file=str(key)) as s:
        sid = "import-while-live-01"
        await s.stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(text="abc")))
        blob = (await s.stub.ExportSession(pb.ExportSessionRequest(session_id=sid))).blob
        await timed_out_calls_change_nothing(
            s, lambda t, r: s.stub.ImportSession(pb.ImportSessionRequest(blob=blob, request_id=r), timeout=t),
            lambda: sessions_total(s.stub), lambda r: _delete_new(s.stub, r), seed=6)
