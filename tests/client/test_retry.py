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
    # the step count first (for expected_steps), the lost send, the check, the resend
    assert methods[1:] == ["GetSession", "Predict", "GetSession", "Predict", "GetSession"]


def test_a_lost_reply_whose_step_applied_is_not_resent(relay):
    with Client(relay.target, retry=FAST) as client:
        sid = client.create_session("To be").session.id
        relay.drop("Predict", "reply")
        with pytest.raises(ClientError) as info:
            client.predict(sid, ", or", expected_steps=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and info.value.step_applied is True
        assert client.get_session(sid).steps == 9  # applied exactly once
    assert [m for m, _ in relay.calls][1:] == ["Predict", "GetSession", "GetSession"]


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


def test_generate_is_resent_only_if_nothing_applied(relay):
    with Client(relay.target, retry=FAST) as client:
        sid = client.create_session("To be").session.id
        relay.drop("Generate", "request")
        tokens = list(client.generate(session_id=sid, max_tokens=4, seed=1))
        assert [t.steps for t in tokens] == [6, 7, 8, 9]
        relay.drop("Generate", "reply")  # the relay got the first token, then cut the call
        try:
            resent = list(client.generate(session_id=sid, max_tokens=4, seed=1))
        except ClientError as error:  # the server had committed that token: not resent
            assert error.step_applied is True and client.get_session(sid).steps > 9
        else:  # the cut reached the server before it committed the token: nothing applied, resent once
            assert [t.steps for t in resent] == [10, 11, 12, 13] and client.get_session(sid).steps == 13
            assert [m for m, _ in relay.calls][-4:] == ["Generate", "GetSession", "Generate", "GetSession"]


async def test_async_client_retries_the_same_way(relay):
    async with AsyncClient(relay.target, retry=FAST) as client:
        sid = (await client.create_session("To be")).session.id
        relay.drop("Predict", "request")
        assert (await client.predict(sid, ", or")).steps == 9
        relay.drop("Predict", "reply")
        with pytest.raises(ClientError) as info:
            await client.predict(sid, "!")
        assert info.value.step_applied is True and (await client.get_session(sid)).steps == 10


def test_stateless_predict_is_simply_resent(relay):
    with Client(relay.target, retry=FAST) as client:
        relay.drop("Predict", "reply")
        assert client.predict(text="hello").steps == 5
    assert [m for m, _ in relay.calls] == ["Predict", "Predict"]
