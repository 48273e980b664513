"""The link between front processes and the engine process (``--fronts N``).

One UNIX stream socket per front, in the abstract namespace (no file to clean
up, nothing on a read-only root; private to the machine's network namespace),
carrying msgpack: a request is ``[op, rid, body]``, a reply ``[rid, ok, body]``
where ``ok`` is False for an error and ``body`` then describes a service error.
rid 0 means "no reply wanted" (commit, release, ...). What the ops and bodies
are is link/messages.py's business; this module only moves frames. msgpack
is self-delimiting, so its streaming Unpacker is the framing: no length
prefixes or protocol of our own. numpy arrays travel as a msgpack extension
(dtype, shape and the raw bytes, no pickle).

Why not ZeroMQ: measured on the 2-core VM this was built on (``python -m
bench.link``), a round trip over pyzmq's DEALER/ROUTER on ipc costs 297 us
alone and 76 us per message with 64 in flight; over this socket, read by
uvloop directly, 178 and 25 us. ZeroMQ hands every message to its own I/O
thread on each side, two more thread wake-ups per hop; its reconnecting and
routing are things one front and one engine on one machine do not need. A
UNIX socket also tells each side at once when the other dies (the kernel
closes it), where ZeroMQ would need a heartbeat to notice.

One socket per front means the engine sees a front's messages in the order
they were sent: a commit sent before the next step of the same session
arrives before it. Frames queued in one turn of the event loop leave in one
write: one syscall and one wake-up of the peer for a whole batch's replies,
and for the commits of the streams they answer (the replies behind those
commits wait for ``written()``, edge/rpc.py).
"""
from __future__ import annotations

import asyncio
import os
import secrets
import socket
from typing import Any, Callable, List, Optional

import msgpack
import numpy as np

from ..proc import budget


_NDARRAY = 1  # msgpack extension code for numpy arrays
ABSTRACT = "unix-abstract:"  # address prefix: a name in Linux's abstract socket namespace
MAX_MESSAGE_BYTES = 256 << 20  # one message at most (a 4096-token prefill's all-position log-probs is ~4 MiB)


def new_address() -> str:
    """A fresh abstract-namespace address for one server's link."""
    return f"{ABSTRACT}lstm-{os.getpid()}-{secrets.token_hex(4)}"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        return msgpack.ExtType(_NDARRAY, msgpack.packb([array.dtype.str, list(array.shape), array.data]))
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__} over the engine link")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _NDARRAY:
        dtype, shape, raw = msgpack.unpackb(data)
        return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)
    return msgpack.ExtType(code, data)


def pack(message: Any) -> bytes:
    return msgpack.packb(message, default=_default, use_bin_type=True)


def unpack(frame: bytes) -> Any:
    return msgpack.unpackb(frame, ext_hook=_ext_hook, raw=False, strict_map_key=False)


class Connection(asyncio.Protocol):
    """One end of a link connection: ``send`` a message (queued, written once per loop
    turn), ``on_message(connection, message)`` for each one received, ``on_lost(connection)``
    once when it closes."""

    def __init__(self, on_message: Callable[["Connection", Any], None],
                 on_lost: Callable[["Connection"], None] = lambda c: None) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: Optional[asyncio.Transport] = None
        self.closed = False
        self._unpacker = msgpack.Unpacker(ext_hook=_ext_hook, raw=False, strict_map_key=False,
                                          max_buffer_size=MAX_MESSAGE_BYTES)
        self._outbox: List[bytes] = []
        self._written: Optional[asyncio.Future] = None  # done when the outbox has been written
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        mark = budget.start()  # the cost timers (proc/budget.py): one read = one wake-up of this side
        self._unpacker.feed(data)
        for message in self._unpacker:
            self.on_message(self, message)
        budget.add("link.read", mark)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.closed:
            self.closed = True
            self._wake_writers(ConnectionError("the link closed before these frames were written"))
            self.on_lost(self)

    def send(self, message: Any, now: bool = False) -> None:
        """Queue ``message`` (written with the others at the end of this loop turn), or with
        ``now`` write it and everything queued before it at once. A commit must be in the
        kernel's socket buffer before the reply it stands behind can leave, or a front killed
        right after the reply would take the commit with it: either ``now``, or queued and the
        reply held until ``written()`` (then a whole batch's commits leave in one write, one
        wake-up of the engine, instead of one each)."""
        if self.closed:
            return
        if not self._outbox and self._loop is not None and not now:
            self._loop.call_soon(self._flush)
        mark = budget.start()
        self._outbox.append(pack(message))
        budget.add("link.pack", mark)
        if now:
            self._flush()

    def written(self) -> Optional[asyncio.Future]:
        """None when nothing is queued; else a future done once everything queued so far has been
        handed to the socket (failed with ConnectionError if the link closes first)."""
        if not self._outbox:
            return None
        if self.closed or self._loop is None:
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("the link is closed: these frames will not be written"))
            return failed
        if self._written is None:
            self._written = self._loop.create_future()
        return self._written

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if frames and self.transport is not None and not self.closed:
            mark = budget.start()
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))  # a lone frame: no copy
            budget.add("link.write", mark)
            self._wake_writers(None)

    def _wake_writers(self, error: Optional[BaseException]) -> None:
        waiting, self._written = self._written, None
        if waiting is not None and not waiting.done():
            if error is None:
                waiting.set_result(None)
            else:
                waiting.set_exception(error)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


def _name(address: str) -> str:
    if not address.startswith(ABSTRACT):
        raise ValueError(f"a link address starts with {ABSTRACT!r}, got {address!r}")
    return "\0" + address[len(ABSTRACT):]


async def serve(address: str, factory: Callable[[], Connection]) -> asyncio.AbstractServer:
    """Listen on ``address``; each front's connection gets a Connection from ``factory``."""
    sock = _socket(address)
    sock.bind(_name(address))
    sock.listen(128)
    return await asyncio.get_running_loop().create_unix_server(factory, sock=sock)


async def connect(address: str, connection: Connection) -> Connection:
    """Connect ``connection`` to the engine at ``address`` (OSError if nobody listens)."""
    sock = _socket(address)
    try:
        sock.connect(_name(address))
    except BlockingIOError:
        pass
    except OSError:
        sock.close()
        raise
    await asyncio.get_running_loop().create_unix_connection(lambda: connection, sock=sock)
    return connection
