"""The Python client reconciles for its caller: a Generate iterator closed early makes the
next call on that session carry the count of tokens it yielded (the server rewinds there,
so the unread tokens it wrote ahead are gone); with retry=True every mutating call carries
a request id, so a resend applies once. A real server process (both modes under
`make test-fronts`) and, to lose replies, a real relay."""
from __future__ import annotations

import contextlib

import pytest
from lstm_client import AsyncClient, Client


def logprobs(result) -> list:
    return list(result.predictions[0].logprobs)


@pytest.mark.parametrize("n", [1, 5, 20])
def test_a_generate_closed_after_n_tokens_continues_from_exactly_those_n(server, n):
    with Client(server.target) as client:
        sid = client.create_session("To be, or not").session.id
        twin = client.fork_session(sid).id
        tokens = client.generate(session_id=sid, max_tokens=4096, seed=2)
        read = [next(tokens).token for _ in range(n)]
        tokens.close()
        assert client.seen[sid] == 13 + n
        after = client.predict(sid, tokens=[7], top_k=0, logprobs=True)  # carries expected_steps = 13 + n
        assert after.steps == 13 + n + 1 and sid not in client.seen
        client.predict(twin, tokens=read)
        assert logprobs(after) == logprobs(client.predict(twin, tokens=[7], top_k=0, logprobs=True))


async def test_the_async_client_reconciles_the_same_way(server):
    async with AsyncClient(server.target) as client:
        sid = (await client.create_session("To be")).session.id
        read = []
        # aclosing: an async iterator left by `break` is closed only when collected
        async with contextlib.aclosing(client.generate(session_id=sid, max_tokens=4096, seed=2)) as tokens:
            async for t in tokens:
                read.append(t.token)
                if len(read) == 5:
                    break
        assert client.seen[sid] == 5 + 5
        assert (await client.predict(sid, tokens=[7])).steps == 11


def test_a_generate_read_to_its_end_leaves_nothing_to_reconcile(server):
    with Client(server.target) as client:
        sid = client.create_session("To be").session.id
        assert len(list(client.generate(session_id=sid, max_tokens=3, seed=1))) == 3
        assert sid not in client.seen


def test_with_retry_a_lost_create_reply_is_resent_and_applies_once(relay):
    with Client(relay.target, retry=True) as client:
        sid = client.create_session("To be").session.id
        before = client.list_sessions().total  # the server is shared with other tests
        relay.drop("ForkSession", "reply")  # the server forked, the client never heard
        fork = client.fork_session(sid)  # resent with the same request id: the first answer
        assert client.get_session(fork.id).steps == 5
        assert client.list_sessions().total == before + 1
        relay.drop("DeleteSession", "reply")
        assert client.delete_session(fork.id) == 5  # the first answer, not NOT_FOUND


def test_with_retry_a_generate_whose_reply_was_lost_is_replayed_not_generated_again(relay):
    with Client(relay.target, retry=True) as client:
        sid = client.create_session("To be").session.id
        relay.drop("Generate", "reply")  # the server kept a token or more, the client read none
        tokens = list(client.generate(session_id=sid, max_tokens=50, seed=3))  # resent with its request id
        steps = client.get_session(sid).steps
        # every token the server kept was handed to the caller once, none was generated twice
        assert tokens and [t.steps for t in tokens] == list(range(6, steps + 1))


def test_with_retry_a_stream_open_carries_a_request_id(server):
    with Client(server.target, retry=True) as client:
        with client.stream() as stream:
            assert stream.request_id and stream.send("ab").steps == 2
    with Client(server.target) as client:
        with client.stream() as stream:
            assert stream.request_id == ""


def test_with_retry_a_generate_cut_mid_way_resumes_from_the_replay_of_what_was_kept(relay):
    with Client(relay.target, retry=True) as client:
        sid = client.create_session("To be").session.id
        relay.drop("Generate", "cut")  # two tokens reach the client, then the connection is cut
        tokens = list(client.generate(session_id=sid, max_tokens=60, seed=4))
        steps = client.get_session(sid).steps
        # the two read, then the rest the server kept, each once: the session holds exactly these
        assert [t.steps for t in tokens] == list(range(6, steps + 1)) and len(tokens) >= 3
    assert [m for m, _ in relay.calls].count("Generate") == 2
