"""Client and AsyncClient (and their stream sessions) offer the same methods with the same
signatures: both are built from one definition (lstm_client/api.py, streams.py)."""
import inspect

from lstm_client import AsyncClient, AsyncStreamSession, Client, StreamSession

CONTEXT = {"__enter__", "__exit__", "__aenter__", "__aexit__"}


def public(cls) -> dict:
    return {name: inspect.signature(getattr(cls, name)) for name in dir(cls)
            if not name.startswith("_") and callable(getattr(cls, name))}


def test_the_two_clients_have_the_same_methods_and_signatures():
    sync, aio = public(Client), public(AsyncClient)
    assert sync.keys() == aio.keys()
    assert {"generate_text", "health", "models", "model", "list_sessions", "reset_session", "fork_session",
            "create_session", "predict", "generate", "get_session", "delete_session", "stream", "close"} <= sync.keys()
    for name in sync:
        assert sync[name] == aio[name], name
    assert inspect.signature(Client.__init__) == inspect.signature(AsyncClient.__init__)


def test_the_async_methods_are_awaited_and_generate_is_iterated():
    for name in public(AsyncClient):
        method = getattr(AsyncClient, name)
        if name == "stream":  # returns the session: `async with client.stream() as s`
            assert not inspect.iscoroutinefunction(method)
        elif name == "generate":  # `async for r in client.generate(...)`
            assert not inspect.iscoroutinefunction(method)
        else:
            assert inspect.iscoroutinefunction(method), name
            assert not inspect.iscoroutinefunction(getattr(Client, name)), name


def test_the_two_stream_sessions_match():
    sync, aio = public(StreamSession), public(AsyncStreamSession)
    assert sync.keys() == aio.keys() == {"send", "close"}
    assert sync["send"] == aio["send"]
    assert {"__enter__", "__exit__"} <= set(dir(StreamSession))
    assert {"__aenter__", "__aexit__"} <= set(dir(AsyncStreamSession))
