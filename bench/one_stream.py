"""``python -m bench.one_stream``: what gRPC itself costs when every message shares ONE stream.

    python -m bench.one_stream --in-flight 64 --messages 20000

perf_analyzer puts all its sequences on one ModelStreamInfer stream; lstm.v1's bench
client gives each sequence its own stream. This measures the same bare grpc.aio echo
(one bidirectional streaming method, 24-byte messages, no protobuf, no model) both
ways with the same number of messages in flight: N on one stream, and one on each of
N streams. The server is a process of its own, on the service's event loop; its CPU (user + system, from /proc)
per message answered is the figure, steadier on a shared machine than msg/s. The
difference is gRPC's: on one stream it allows one write in flight, so every reply is
a write and a completion of its own, where many streams' replies share them.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from typing import Dict, List

import grpc

from . import aio_run
from .procs import cpu_seconds

METHOD = "/bench.OneStream/Echo"
PAYLOAD = b"x" * 24


def _serve(ports: "mp.Queue") -> None:
    async def echo(requests, context):
        async for request in requests:
            yield request

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(
            "bench.OneStream", {"Echo": grpc.stream_stream_rpc_method_handler(echo)})
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    aio_run(main())  # the service's loop (uvloop where installed)


async def _drive(port: int, streams: int, in_flight: int, messages: int) -> int:
    """``streams`` streams with ``in_flight`` messages each kept in flight until ``messages`` came back."""
    answered = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        open_call = channel.stream_stream(METHOD)

        async def one() -> None:
            nonlocal answered
            call = open_call()
            for _ in range(in_flight):
                await call.write(PAYLOAD)
            while answered < messages:
                await call.read()
                answered += 1
                await call.write(PAYLOAD)
            await call.done_writing()
            call.cancel()

        await asyncio.gather(*(one() for _ in range(streams)))
    return answered


def measure(streams: int, in_flight: int, messages: int) -> Dict[str, float]:
    """One shape on a fresh server: msg/s and the server's CPU µs per message."""
    ports: "mp.Queue" = mp.Queue()
    server = mp.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=30)
        asyncio.run(_drive(port, streams, in_flight, max(200, messages // 10)))  # warm-up
        cpu, began = cpu_seconds(server.pid)[0], time.perf_counter()
        answered = asyncio.run(_drive(port, streams, in_flight, messages))
        seconds, cpu = time.perf_counter() - began, cpu_seconds(server.pid)[0] - cpu
    finally:
        server.kill()
        server.join(10)
    return {"streams": streams, "in_flight_per_stream": in_flight, "messages": answered,
            "msgs_per_s": answered / seconds, "server_cpu_us_per_msg": cpu / answered * 1e6}


def run(in_flight: int, messages: int) -> List[Dict[str, float]]:
    return [measure(1, in_flight, messages), measure(in_flight, 1, messages)]


def table(rows: List[Dict[str, float]]) -> str:
    lines = ["| shape | msg/s | server CPU µs/msg |", "|---|---:|---:|"]
    for r in rows:
        shape = f"{r['streams']} stream(s) x {r['in_flight_per_stream']} in flight"
        lines.append(f"| {shape} | {r['msgs_per_s']:.0f} | {r['server_cpu_us_per_msg']:.1f} |")
    one, many = rows
    lines.append(f"\none stream / {many['streams']} streams, server CPU per message: "
                 f"{one['server_cpu_us_per_msg'] / many['server_cpu_us_per_msg']:.2f}x")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--in-flight", type=int, default=64, help="messages in flight in all [64]")
    p.add_argument("--messages", type=int, default=20000, help="messages measured per shape [20000]")
    args = p.parse_args()
    print(table(run(args.in_flight, args.messages)))


if __name__ == "__main__":
    main()
