"""The journal: a session can be rewound to exactly the count a client last saw.

HTTP/2 lets the server write ahead of what a client reads, so a Generate cancelled
after n read tokens, or a stream cut with replies unread, has kept more than the client
saw. The next call with ``expected_steps`` = the count it saw continues from exactly
that state: its log-probs are bitwise those of a twin fed only what the client read.
RewindSession does the same explicitly. Real server, real channel, both modes."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from svc_helpers import serving

PROMPT = "To be, or not"
PROBE = pb.OutputOptions(top_k=0, logprobs=True)


async def steps_of(stub, sid: str) -> int:
    return (await stub.GetSession(pb.GetSessionRequest(session_id=sid))).session.steps


async def wait_released(stub, sid: str) -> None:
    """The cancelled call's hold is gone (its server side has stopped)."""
    for _ in range(1000):
        if not (await stub.GetSession(pb.GetSessionRequest(session_id=sid))).session.busy:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"session {sid} still busy")


async def session_with_twin(stub, sid: str) -> str:
    await stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(text=PROMPT)))
    twin = sid + "-twin"
    await stub.ForkSession(pb.ForkSessionRequest(session_id=sid, new_session_id=twin))
    return twin


async def probe(stub, sid: str, expected_steps=None) -> pb.StepResult:
    request = pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[7]), output=PROBE)
    if expected_steps is not None:
        request.expected_steps = expected_steps
    return (await stub.Predict(request)).result


def logprobs(result: pb.StepResult) -> list:
    return list(result.predictions[0].logprobs)


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    blob = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status_pb2.Status.FromString(blob).details)
    return info


@pytest.mark.parametrize("n", [1, 5, 20])
async def test_a_generate_cancelled_after_n_read_tokens_reconciles_to_exactly_n(tiny_model_dir, n):
    async with serving(tiny_model_dir) as s:
        sid = f"generate-cut-{n:02d}-000001"
        twin = await session_with_twin(s.stub, sid)
        base = len(PROMPT)
        call = s.stub.Generate(pb.GenerateRequest(session_id=sid, sampling=pb.SamplingParams(max_tokens=4096,
                                                                                             seed=3)))
        read = []
        async for reply in call:
            read.append(reply.token)
            if len(read) == n:
                break
        call.cancel()
        await wait_released(s.stub, sid)
        kept = await steps_of(s.stub, sid)
        assert kept >= base + n
        reconciled = await probe(s.stub, sid, expected_steps=base + n)  # rewinds to what the client read
        assert reconciled.steps == base + n + 1
        await s.stub.Predict(pb.PredictRequest(session_id=twin, input=pb.Input(tokens=read)))
        assert logprobs(reconciled) == logprobs(await probe(s.stub, twin)), "not the state the client saw"


async def test_a_cut_stream_with_unread_replies_reconciles_to_what_was_read(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        sid = "stream-cut-000001"
        twin = await session_with_twin(s.stub, sid)
        base = len(PROMPT)
        tokens = [(i * 37 + 11) % 256 for i in range(60)]
        call = s.stub.Stream()
        await call.write(pb.StreamRequest(open=pb.OpenStream(session_id=sid)))
        assert (await call.read()).HasField("opened")
        for t in tokens:  # every step written before any reply is read
            await call.write(pb.StreamRequest(step=pb.StreamStep(input=pb.Input(tokens=[t]))))
        read = 0
        for _ in range(7):
            reply = await call.read()
            read += 1
            assert reply.result.steps == base + read
        while await steps_of(s.stub, sid) < base + 20:  # the server runs on ahead of the reader
            await asyncio.sleep(0.005)
        call.cancel()
        await wait_released(s.stub, sid)
        assert await steps_of(s.stub, sid) > base + read, "no unread reply was kept: the test proves nothing"
        reconciled = await probe(s.stub, sid, expected_steps=base + read)
        await s.stub.Predict(pb.PredictRequest(session_id=twin, input=pb.Input(tokens=tokens[:read])))
        assert logprobs(reconciled) == logprobs(await probe(s.stub, twin))


async def test_a_retried_predict_after_a_late_ok_ends_where_one_application_left_it(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        sid = "late-ok-retried-0001"
        twin = await session_with_twin(s.stub, sid)
        base = len(PROMPT)
        step = pb.PredictRequest(session_id=sid, input=pb.Input(text="abc"), expected_steps=base, output=PROBE)
        first = await s.stub.Predict(step)  # the reply "lost": the client resends the same request
        again = await s.stub.Predict(step)
        assert again == first and await steps_of(s.stub, sid) == base + 3
        await s.stub.Predict(pb.PredictRequest(session_id=twin, input=pb.Input(text="abc")))
        assert logprobs(await probe(s.stub, sid)) == logprobs(await probe(s.stub, twin))


async def test_rewind_session_goes_back_exactly_and_says_how_far_it_can(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        sid = "rewind-session-0001"
        twin = await session_with_twin(s.stub, sid)
        base = len(PROMPT)
        await probe(s.stub, sid, expected_steps=base)  # confirms the prompt: the journal starts here
        for text in ("ab", "cde", "f"):
            await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text=text)))
        rewound = await s.stub.RewindSession(pb.RewindSessionRequest(session_id=sid, steps=base + 3))
        assert rewound.session.steps == base + 3 == await steps_of(s.stub, sid)
        await s.stub.Predict(pb.PredictRequest(session_id=twin, input=pb.Input(tokens=[7, ord("a"), ord("b")])))
        assert logprobs(await probe(s.stub, sid)) == logprobs(await probe(s.stub, twin))

        now = await steps_of(s.stub, sid)
        for steps, reason in ((base - 1, "OUTSIDE_JOURNAL"), (now + 1, "STEPS_MISMATCH")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.stub.RewindSession(pb.RewindSessionRequest(session_id=sid, steps=steps))
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            info = error_info(caught.value)
            assert info.reason == reason
            assert int(info.metadata["reachable_to"]) == now and int(info.metadata["reachable_from"]) <= base
            assert await steps_of(s.stub, sid) == now  # refused: nothing changed


async def test_a_journal_holds_a_state_of_its_own_only_while_the_last_call_could_be_in_doubt(tiny_model_dir):
    """Confirming (expected_steps = the count) takes no state; a RewindSession to the session's own
    count confirms every step, and the journal then shares the session's state (an idle session
    keeps nothing of its own); a step after it is in doubt again, and can be undone."""
    async with serving(tiny_model_dir) as s:
        sid = "journal-held-session"
        await s.stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(text="ab")))
        await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="c")))
        await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="d"), expected_steps=3))
        await s.sync()
        session = s.engine.store.get(sid)
        assert session.journal.state is s.engine.zeros  # counted from zero: no state of its own
        err = None
        try:  # confirmed: below 3 is out of reach now
            await s.stub.RewindSession(pb.RewindSessionRequest(session_id=sid, steps=2))
        except grpc.aio.AioRpcError as exc:
            err = exc
        assert err is not None and err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (await s.stub.RewindSession(pb.RewindSessionRequest(session_id=sid, steps=4))).session.steps == 4
        await s.sync()
        assert all(a is b for a, b in zip(session.journal.state, session.state))  # shared: nothing of its own
        stepped = await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="e"), output=PROBE))
        again = await s.stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(text="e"), output=PROBE,
                                                       expected_steps=4))
        assert again.result == stepped.result  # the step after it rewound and applied again, bitwise
