"""Request ids (AIP-155): a retry with the same request_id gets the first call's answer
and applies nothing twice; the same id with another request is INVALID_ARGUMENT; a call
that timed out and is retried with its id ends with exactly one effect, whether or not
the first attempt applied (the late-OK window). Real server, real channel, both modes."""
from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import grpc
import pytest

from lstm_service.service.api.values import Generated, Remembrance
from lstm_service.service.core.request_ledger import ENTRY_OVERHEAD, TOKEN_OVERHEAD, RequestLedger
from lstm_service.service.api.errors import InvalidArgument
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from svc_helpers import serving


async def total(stub) -> int:
    return (await stub.ListSessions(pb.ListSessionsRequest(limit=1))).total


async def steps_of(stub, sid: str) -> int:
    return (await stub.GetSession(pb.GetSessionRequest(session_id=sid))).session.steps


async def failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def key_file(tmp_path: Path) -> str:
    path = tmp_path / "session.key"
    path.write_bytes(b"k" * 32)
    return str(path)


async def test_a_retried_create_predict_fork_import_reset_delete_applies_once(tiny_model_dir, tmp_path):
    async with serving(tiny_model_dir, session_key_file=key_file(tmp_path)) as s:
        create = pb.CreateSessionRequest(prompt=pb.Input(text="abc"), request_id="create-1")
        first = await s.stub.CreateSession(create)
        again = await s.stub.CreateSession(create)
        assert again == first and await total(s.stub) == 1
        sid = first.session.id

        predict = pb.PredictRequest(session_id=sid, input=pb.Input(text="de"), request_id="predict-1",
                                    output=pb.OutputOptions(logprobs=True))
        first_step = await s.stub.Predict(predict)
        assert await s.stub.Predict(predict) == first_step  # the same result, log-probs bitwise
        assert await steps_of(s.stub, sid) == 5

        fork = pb.ForkSessionRequest(session_id=sid, request_id="fork-1")
        forked = await s.stub.ForkSession(fork)
        assert await s.stub.ForkSession(fork) == forked and await total(s.stub) == 2

        blob = (await s.stub.ExportSession(pb.ExportSessionRequest(session_id=sid))).blob
        import_ = pb.ImportSessionRequest(blob=blob, request_id="import-1")
        imported = await s.stub.ImportSession(import_)
        assert await s.stub.ImportSession(import_) == imported and await total(s.stub) == 3

        reset = pb.ResetSessionRequest(session_id=sid, request_id="reset-1")
        await s.stub.ResetSession(reset)
        await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="x")))
        assert (await s.stub.ResetSession(reset)).session.steps == 0  # the first answer, not a second reset
        assert await steps_of(s.stub, sid) == 1

        delete = pb.DeleteSessionRequest(session_id=forked.session.id, request_id="delete-1")
        deleted = await s.stub.DeleteSession(delete)
        assert await s.stub.DeleteSession(delete) == deleted  # not NOT_FOUND: the first answer
        assert await total(s.stub) == 2


async def test_a_request_id_reused_for_another_request_is_refused_and_applies_nothing(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="ab")))).session.id
        await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="c"), request_id="same"))
        err = await failure(s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="d"),
                                                             request_id="same")))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "request_id 'same' was used for a different request" in err.details()
        err = await failure(s.stub.ResetSession(pb.ResetSessionRequest(session_id=sid, request_id="same")))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # another method is another request
        assert await steps_of(s.stub, sid) == 3


@pytest.mark.parametrize("bad", ["x" * 129, "has space", "ünï"])
async def test_a_malformed_request_id_is_refused_before_anything_runs(tiny_model_dir, bad):
    async with serving(tiny_model_dir) as s:
        err = await failure(s.stub.CreateSession(pb.CreateSessionRequest(request_id=bad)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "1 to 128 characters of A-Z a-z 0-9 . _ : -" in err.details()
        assert await total(s.stub) == 0


async def test_timed_out_creates_and_forks_retried_with_their_id_leave_exactly_one_session(tiny_model_dir):
    """The late-OK window: whether or not a timed-out attempt applied, its retry with the
    same request_id ends with exactly one new session, the one the retry names."""
    rng = random.Random(7)
    async with serving(tiny_model_dir) as s:
        source = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="ab")))).session.id
        exceeded = 0
        for attempt in range(400):
            rid = str(uuid.UUID(int=rng.getrandbits(128)))
            request = (pb.CreateSessionRequest(request_id=rid) if attempt % 2 else
                       pb.ForkSessionRequest(session_id=source, request_id=rid))
            call = s.stub.CreateSession if attempt % 2 else s.stub.ForkSession
            try:
                reply = await call(request, timeout=rng.uniform(0.0001, 0.004))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (exc.code(), exc.details())
                exceeded += 1
                await asyncio.sleep(0.005)
                reply = await call(request)  # the retry, same id
            assert await total(s.stub) == 2, f"attempt {attempt}: not exactly one new session"
            assert await s.stub.GetSession(pb.GetSessionRequest(session_id=reply.session.id))
            await s.stub.DeleteSession(pb.DeleteSessionRequest(session_id=reply.session.id))
            if exceeded >= 25:
                break
        assert exceeded >= 10, f"only {exceeded} calls ran out of time; the test proves nothing"


def test_the_ledger_keeps_answers_for_its_window_and_within_its_bounds():
    now = [0.0]
    ledger = RequestLedger(lambda: now[0], window=600, max_ids=3, max_bytes=10 * (100 + ENTRY_OVERHEAD))
    ledger.keep("alice", Remembrance("a", b"f", b"answer-a"))
    assert ledger.keep("alice", Remembrance("a", b"f", b"another")) is None  # a first answer is never replaced
    kept = ledger.recall("alice", "a", b"f")
    assert kept is not None and kept.answer == b"answer-a"
    assert ledger.recall("bob", "a", b"f") is None  # per principal
    with pytest.raises(InvalidArgument):
        ledger.recall("alice", "a", b"g")
    for rid in "bcd":
        ledger.keep("alice", Remembrance(rid, b"f", b"x"))
    assert ledger.recall("alice", "a", b"f") is None and len(ledger) == 3  # the oldest went first
    now[0] = 601
    assert ledger.recall("alice", "d", b"f") is None and len(ledger) == 0  # past the window
    ledger.keep("alice", Remembrance("big", b"f", b"x" * (11 * (100 + ENTRY_OVERHEAD))))
    assert len(ledger) == 0  # over the byte bound on its own: not kept


def test_a_generate_answer_grows_with_its_tokens_and_counts_against_the_byte_bound():
    ledger = RequestLedger(window=600, max_ids=10, max_bytes=2 * ENTRY_OVERHEAD + 3 * (TOKEN_OVERHEAD + 2))
    ledger.keep("alice", Remembrance("older", b"f"))
    kept = ledger.keep("alice", Remembrance("gen", b"g"), running=True)
    assert kept is not None and kept.running
    for steps in range(1, 4):
        ledger.add_token("alice", "gen", kept, Generated(7, b"a", "a", -1.0, steps, None))
    again = ledger.recall("alice", "gen", b"g")
    assert again is kept and [g.steps for g in again.tokens] == [1, 2, 3] and ledger.knows("alice", "older")
    ledger.add_token("alice", "gen", kept, Generated(7, b"a", "a", -1.0, 4, "length"))
    ledger.finished(kept)
    assert not kept.running and not ledger.knows("alice", "older")  # the oldest made room for it
    assert ledger.knows("alice", "gen")


async def test_a_retried_generate_replays_the_tokens_the_first_call_kept(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="ab")))).session.id
        whole = pb.GenerateRequest(session_id=sid, sampling=pb.SamplingParams(max_tokens=8, seed=5),
                                   request_id="gen-whole")
        tokens = [t async for t in s.stub.Generate(whole)]
        assert [t async for t in s.stub.Generate(whole)] == tokens  # bitwise, nothing generated again
        assert tokens[-1].finish_reason == pb.FINISH_REASON_LENGTH and await steps_of(s.stub, sid) == 10

        cut = pb.GenerateRequest(session_id=sid, sampling=pb.SamplingParams(max_tokens=400, seed=6),
                                 request_id="gen-cut")
        call = s.stub.Generate(cut)
        read = [await call.read() for _ in range(3)]
        call.cancel()
        for _ in range(100):  # the server sees the cancel and stops
            await asyncio.sleep(0.02)
            if not (await s.stub.GetSession(pb.GetSessionRequest(session_id=sid))).session.busy:
                break
        steps = await steps_of(s.stub, sid)
        replayed = [t async for t in s.stub.Generate(cut)]
        assert replayed[:3] == read  # what was read, then what was kept unread
        assert replayed[-1].steps == steps and [t.steps for t in replayed] == list(range(11, steps + 1))
        assert replayed[-1].finish_reason == pb.FINISH_REASON_UNSPECIFIED  # the first call was cut
        assert await steps_of(s.stub, sid) == steps
        # Reconcile to what was read: the next call rewinds there (the journal), then applies.
        nxt = await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="z"),
                                                     expected_steps=read[-1].steps))
        assert nxt.result.steps == read[-1].steps + 1


async def test_a_retried_stream_open_attaches_to_the_session_it_created(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        open_ = pb.OpenStream(create=True, end_with_stream=False, request_id="open-1")

        async def open_and_step(text: str) -> tuple:
            call = s.stub.Stream()
            await call.write(pb.StreamRequest(open=open_))
            opened = (await call.read()).opened
            await call.write(pb.StreamRequest(step=pb.StreamStep(input=pb.Input(text=text))))
            result = (await call.read()).result
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
            return opened, result

        first, step = await open_and_step("ab")
        again, step_again = await open_and_step("c")  # the retry attaches: the same session, as it is now
        assert again.id == first.id and again.steps == 2 and step_again.steps == 3
        assert await total(s.stub) == 1
        call = s.stub.Stream()
        await call.write(pb.StreamRequest(open=pb.OpenStream(create=True, ttl_seconds=5, request_id="open-1")))
        err = await failure(call.read())
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "was used for a different request" in err.details()
        assert await total(s.stub) == 1
