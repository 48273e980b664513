"""The link's connection (service/link.py) over a real socket pair, without a server: what
``send`` has written by the time it returns."""
from __future__ import annotations

import asyncio
import socket

import msgpack

from lstm_service.service.link import transport as link


async def _pair():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    connection = link.Connection(on_message=lambda c, m: None)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: connection, sock=ours)
    theirs.setblocking(False)
    return connection, theirs


def _received(sock: socket.socket) -> list:
    try:
        data = sock.recv(1 << 16)
    except BlockingIOError:
        return []
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    return list(unpacker)


async def test_a_message_sent_now_is_on_the_socket_before_send_returns_after_what_was_queued():
    """A commit (remote_engine.RemoteLease.commit) must be in the kernel's buffer before the reply
    it stands behind is written: a front SIGKILLed right after the reply left used to take the
    commit with it (test_fronts' front-killed-mid-stream test saw 4 steps where 5 were answered)."""
    connection, theirs = await _pair()
    try:
        connection.send(["release", 0, ["a"]])  # queued until the loop's turn ends
        assert _received(theirs) == []
        connection.send(["commit", 0, ["b"]], now=True)
        assert _received(theirs) == [["release", 0, ["a"]], ["commit", 0, ["b"]]]  # in order, already there
        connection.send(["release", 0, ["c"]])
        await asyncio.sleep(0)  # one loop turn: the queued one goes out
        assert _received(theirs) == [["release", 0, ["c"]]]
    finally:
        connection.close()
        theirs.close()


async def test_written_is_done_once_everything_queued_is_on_the_socket_in_one_write():
    """The edge awaits ``written()`` before a reply leaves (edge/rpc.py): the commits of every
    stream answered in one loop turn go out together, in order, and each reply waits for them."""
    connection, theirs = await _pair()
    try:
        assert connection.written() is None  # nothing queued: nothing to wait for
        for i in range(5):
            connection.send(["commit", 0, [i]])
        waiting = connection.written()
        assert waiting is not None and connection.written() is waiting  # one write, one future for all
        assert not waiting.done() and _received(theirs) == []
        await waiting
        assert _received(theirs) == [["commit", 0, [i]] for i in range(5)]
        assert connection.written() is None
    finally:
        connection.close()
        theirs.close()


async def test_written_fails_when_the_link_closes_first():
    connection, theirs = await _pair()
    try:
        connection.send(["commit", 0, ["a"]])
        waiting = connection.written()
        connection.connection_lost(None)  # as the loop reports a closed socket
        try:
            await waiting
        except ConnectionError:
            pass
        else:
            raise AssertionError("written() succeeded on a closed link")
        again = connection.written()  # asked after the close: the frame is still unwritten
        assert again is not None
        try:
            await again
        except ConnectionError:
            pass
        else:
            raise AssertionError("written() succeeded on a closed link")
    finally:
        connection.close()
        theirs.close()
