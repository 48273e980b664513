"""``python -m bench.link``: what one message costs on the front <-> engine link,
and what it would cost over ZeroMQ instead (why service/link/transport.py is a UNIX socket).

A server process answers every request with a typical step reply (top-5 of one
position) and a client process sends N requests, 1 or 64 in flight; both
sides use uvloop and the service's own msgpack framing (service/link/transport.py's
pack/unpack). Printed: microseconds per round trip (1 in flight: the latency
a lone stream pays) and per message (64 in flight: the cost under load).

    python -m bench.link [--messages 5000]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import sys
import time
from typing import Awaitable, Callable

import numpy as np

from lstm_service.service.link import transport as link
from lstm_service.service.proc.main import event_loop_runner

REPLY = ["sid", 12, 1, np.arange(5), np.ones((1, 5), np.float32), np.ones((1, 5), np.float32), None, [5, False, False]]
REQUEST_ARGS = [1, np.arange(1), [5, False, False], False, None]


def _run(coroutine) -> float:
    runner, _ = event_loop_runner()
    with runner:
        return runner.run(coroutine)


# -- the link as the service runs it: a UNIX socket read by the event loop -------------------
async def _unix_server(address: str) -> None:
    def answer(connection: link.Connection, message: list) -> None:
        connection.send([message[1], True, REPLY])

    await link.serve(address, lambda: link.Connection(answer))
    await asyncio.Event().wait()


async def _unix_client(address: str, messages: int, in_flight: int) -> float:
    waiting: dict = {}
    connection = await link.connect(address, link.Connection(lambda c, m: waiting.pop(m[0]).set_result(m[2])))

    def send(rid: int, future: asyncio.Future) -> None:
        waiting[rid] = future
        connection.send(["run", rid, REQUEST_ARGS])

    return await _drive(send, messages, in_flight)


# -- the same over ZeroMQ DEALER/ROUTER on ipc (pyzmq, the bench extra) ----------------------
async def _zmq_server(address: str) -> None:
    import zmq
    import zmq.asyncio

    socket = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    socket.bind(address)
    while True:
        peer, frame = await socket.recv_multipart()
        socket.send_multipart([peer, link.pack([link.unpack(frame)[1], True, REPLY])])


async def _zmq_client(address: str, messages: int, in_flight: int) -> float:
    import zmq
    import zmq.asyncio

    socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    socket.connect(address)
    waiting: dict = {}

    async def receive() -> None:
        while True:
            rid, _, body = link.unpack(await socket.recv())
            waiting.pop(rid).set_result(body)

    receiver = asyncio.get_running_loop().create_task(receive())

    def send(rid: int, future: asyncio.Future) -> None:
        waiting[rid] = future
        socket.send(link.pack(["run", rid, REQUEST_ARGS]))

    try:
        return await _drive(send, messages, in_flight)
    finally:
        receiver.cancel()


async def _drive(send: Callable[[int, asyncio.Future], None], messages: int, in_flight: int) -> float:
    """Seconds per message with ``in_flight`` requests outstanding at all times."""
    loop, ids = asyncio.get_running_loop(), itertools.count()

    async def one() -> None:
        future = loop.create_future()
        send(next(ids), future)
        await future

    await one()  # connected and warm
    began = time.perf_counter()

    async def worker() -> None:
        for _ in range(messages // in_flight):
            await one()

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return (time.perf_counter() - began) / (messages // in_flight * in_flight)


def _serve(server: Callable[[str], Awaitable[None]], address: str) -> None:
    _run(server(address))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.link", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000, help="requests per measurement [5000]")
    args = parser.parse_args(argv)
    transports = [("unix socket (the link)", _unix_server, _unix_client, link.new_address())]
    try:
        import zmq  # noqa: F401

        transports.append(("zeromq ipc", _zmq_server, _zmq_client, f"ipc://@bench-link-{os.getpid()}"))
    except ImportError:
        print("pyzmq is not installed (pip install '.[bench]'): ZeroMQ not measured", file=sys.stderr)
    print("| transport | 1 in flight: us per round trip | 64 in flight: us per message |\n|---|---:|---:|")
    for name, server, client, address in transports:
        process = mp.get_context("spawn").Process(target=_serve, args=(server, address), daemon=True)
        process.start()
        time.sleep(1.0)
        try:
            lone = _run(client(address, args.messages // 5, 1))
            loaded = _run(client(address, args.messages, 64))
        finally:
            process.terminate()
        print(f"| {name} | {lone * 1e6:.0f} | {loaded * 1e6:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
