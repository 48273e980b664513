"""retry=True after a lost request, a lost reply, a refusal; expected_steps; errors' details.
The faults come from a real gRPC relay in front of a real server (relay.py)."""
import grpc
import pytest
from lstm_client import AsyncClient, Client, ClientError, RetryPolicy

FAST = RetryPolicy(attempts=3, backoff=0.01)


def test_a_lost_request_is_resent_and_applies_once(relay):
    with Client(relay.target, retry=FAST) as client:
        sid = client.create_session("To be").session.id
        relay.drop("Predict", "request")
        assert client.predict(sid, ", or").steps == 9
        assert client.get_session(sid).steps == 9
    methods = [m for m, _ in relay.calls]
    # the step count first (for expected_steps), the lost send, the resend (same request id)
    assert methods[1:] == ["GetSession", "Predict", "Predict", "GetSession"]


def test_a_lost_reply_whose_step_applied_is_resent_and_gets_the_first_answer(relay):
    with Client(relay.target, retry=FAST) as client:
        sid = client.create_session("To be").session.id
        relay.drop("Predict", "reply")
        first = client.predict(sid, ", or", expected_steps=5, logprobs=True)  # resent with its request id
        assert first.steps == 9 and client.get_session(sid).steps == 9  # applied exactly once
    assert [m for m, _ in relay.calls][1:] == ["Predict", "Predict", "GetSession"]


def test_without_retry_a_lost_request_is_the_callers(relay):
    with Client(relay.target) as client:
        sid = client.create_session("To be").session.id
        relay.drop("Predict", "request")
        with pytest.raises(ClientError) as info:
            client.predict(sid, "!")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and info.value.step_applied is None
        assert client.predict(sid, "!", retry=True).steps == 6  # per-call retry


def test_expected_steps_mismatch_says_the_actual_count_and_is_not_retried(relay):
    with Client(relay.target, retry=FAST) as client:
        sid = client.create_session("To be").session.id
        with pytest.raises(ClientError) as info:
            client.predict(sid, "!", expected_steps=7)  # ahead of the session (below it: a rewind)
        error = info.value
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (error.reason, error.session_steps) == ("STEPS_MISMATCH", 5)
        with client.stream(sid) as stream:
            assert stream.send("!", expected_steps=5).steps == 6
        with pytest.raises(ClientError) as info:
            list(client.generate(session_id=sid, max_tokens=2, expected_steps=9))
        assert info.value.session_steps == 6
    assert [m for m, _ in relay.calls].count("Predict") == 1


def test_generate_is_resent_with_its_request_id_and_nothing_generates_twice(relay):
    with Client(relay.target, retry=FAST) as client:
        sid = client.create_session("To be").session.id
        relay.drop("Generate", "request")
        tokens = list(client.generate(session_id=sid, max_tokens=4, seed=1))
        assert [t.steps for t in tokens] == [6, 7, 8, 9]
        relay.drop("Generate", "reply")  # the relay got the first token, then cut the call
        resent = list(client.generate(session_id=sid, max_tokens=4, seed=1))
        steps = client.get_session(sid).steps
        # what the server kept (replayed), or, if the cut reached it before its first commit, a
        # fresh run: either way every token kept was handed out once
        assert [t.steps for t in resent] == list(range(10, steps + 1)) and 10 <= steps <= 13
        assert [m for m, _ in relay.calls][-3:] == ["Generate", "Generate", "GetSession"]


async def test_async_client_retries_the_same_way(relay):
    async with AsyncClient(relay.target, retry=FAST) as client:
        sid = (await client.create_session("To be")).session.id
        relay.drop("Predict", "request")
        assert (await client.predict(sid, ", or")).steps == 9
        relay.drop("Predict", "reply")
        assert (await client.predict(sid, "!")).steps == 10  # resent with its id: the first answer
        assert (await client.get_session(sid)).steps == 10


def test_stateless_predict_is_simply_resent(relay):
    with Client(relay.target, retry=FAST) as client:
        relay.drop("Predict", "reply")
        assert client.predict(text="hello").steps == 5
    assert [m for m, _ in relay.calls] == ["Predict", "Predict"]
