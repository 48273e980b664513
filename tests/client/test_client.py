"""The Python client library against a real server: every method, blocking and asyncio,
the session header on every call that names a session, and the server's error details."""
import grpc
import pytest
from lstm_client import AsyncClient, Client, ClientError


def test_blocking_client_end_to_end(server):
    with Client(server.target) as client:
        created = client.create_session("To be", top_k=3)
        sid = created.session.id
        assert len(created.result.predictions[0].top) == 3
        assert client.predict(sid, ", or").steps == 9
        fork = client.fork_session(sid)
        assert fork.steps == 9 and fork.id != sid and fork.id.split(".")[0] == sid.split(".")[0]
        text = client.generate_text(session_id=sid, max_tokens=5, seed=1)
        assert client.get_session(sid).steps == 14 and isinstance(text, str)
        with client.stream() as stream:
            assert stream.send("abc").steps == 3
            assert stream.send(tokens=[100, 101]).steps == 5
            ephemeral = stream.session_id
        with pytest.raises(grpc.RpcError) as info:
            client.get_session(ephemeral)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND  # it ended with its stream
        with client.stream(sid) as stream:  # attach to a named session
            assert stream.send("!").steps == 15
        assert client.reset_session(sid).steps == 0
        assert client.delete_session(fork.id) == 9
        assert client.health() == "SERVING" and client.models()[0].name == "tiny-lstm"
        assert client.model().name == "tiny-lstm"
        assert any(s.id == sid for s in client.list_sessions().sessions)


def test_generate_text_echoes_the_prompt_like_the_cli(server):
    with Client(server.target) as client:
        echoed = client.generate_text("ROMEO:", max_tokens=8, seed=4)
        alone = client.generate_text("ROMEO:", max_tokens=8, seed=4, echo=False)
        tokens = list(client.generate("ROMEO:", max_tokens=8, seed=4))
    assert echoed == "ROMEO:" + alone and alone == "".join(r.text for r in tokens)
    assert len(tokens) == 8 and tokens[-1].finish_reason == 1


async def test_async_client_end_to_end(server):
    async with AsyncClient(server.target) as client:
        sid = (await client.create_session("To be", top_k=2)).session.id
        assert (await client.predict(sid, ", or")).steps == 9
        fork = await client.fork_session(sid)
        assert fork.steps == 9
        tokens = [r async for r in client.generate(session_id=sid, max_tokens=3, seed=2)]
        assert tokens[-1].steps == 12
        text = await client.generate_text("ROMEO:", max_tokens=4, seed=2)
        assert text.startswith("ROMEO:") and len(text.encode()) >= len("ROMEO:")
        async with client.stream(sid) as stream:
            assert (await stream.send("x")).steps == 13
        assert (await client.get_session(sid)).steps == 13
        assert (await client.reset_session(sid)).steps == 0
        assert await client.delete_session(fork.id) == 9
        assert await client.health() == "SERVING"
        assert (await client.models())[0].name == (await client.model()).name == "tiny-lstm"
        assert any(s.id == sid for s in (await client.list_sessions()).sessions)


def test_every_call_naming_a_session_sends_its_id_as_the_routing_header(relay):
    with Client(relay.target) as client:
        sid = client.create_session("hi").session.id
        client.predict(sid, "!")
        list(client.generate(session_id=sid, max_tokens=2, seed=1))
        with client.stream(sid) as stream:
            stream.send("x")
        fork = client.fork_session(sid)
        client.get_session(sid)
        client.delete_session(fork.id)
        client.list_sessions()
    named = [(m, h) for m, h in relay.calls if m != "ListSessions"]
    assert [m for m, _ in named] == ["CreateSession", "Predict", "Generate", "Stream", "ForkSession", "GetSession",
                                     "DeleteSession"]
    assert [h for _, h in named] == [sid] * 6 + [fork.id]
    assert dict(relay.calls)["ListSessions"] is None


async def test_async_calls_send_the_routing_header_too(relay):
    async with AsyncClient(relay.target) as client:
        sid = (await client.create_session("hi")).session.id
        await client.predict(sid, "!")
        [r async for r in client.generate(session_id=sid, max_tokens=2, seed=1)]
        async with client.stream(sid) as stream:
            await stream.send("x")
        await client.get_session(sid)
        await client.delete_session(sid)
    assert [h for _, h in relay.calls] == [sid] * 6


def test_errors_carry_the_servers_details(server):
    with Client(server.target) as client:
        with pytest.raises(ClientError) as info:
            client.generate_text("x", max_tokens=100000)
        error = info.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in error.details()
        assert error.reason and error.domain == "lstm.v1"
        assert any("max_tokens" in field for field, _ in error.field_violations)
        with pytest.raises(ClientError) as info:
            client.get_session("no-such-session-0000")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.reason


def test_an_input_with_both_text_and_tokens_is_refused_before_it_is_sent(server):
    """Input says "set exactly one"; proto3 cannot put a repeated field in a oneof, so the typed
    client refuses both (the server answers INVALID_ARGUMENT to other clients: test_errors)."""
    with Client(server.target) as client:
        sid = client.create_session("To be").session.id
        with pytest.raises(ValueError, match="not both"):
            client.predict(sid, "x", tokens=[1])
        with client.stream(sid) as stream, pytest.raises(ValueError, match="not both"):
            stream.send("x", tokens=[1])
        assert client.get_session(sid).steps == 5  # nothing was sent
