"""Client load: N concurrent ``Stream`` sessions, each a closed loop of steps.

    with ClientPool(processes=2) as pool:
        stats = pool.run("127.0.0.1:50051", streams=64, tokens=8, warmup=2, duration=10)

The streams are split over a few client processes (spawned, each one
grpc.aio event loop on uvloop where installed) so one Python process is
not the limit. Each stream opens a session (create, x-session-id metadata
so a proxy could route it), then sends one step, waits for its answer,
sends the next. Requests are serialized once up front and answers are
kept as bytes (the first answer of each stream is parsed and checked), so
the client spends its CPU on the transport, not on protobuf, and leaves
the most CPU to the server; ``parse=True`` parses every answer instead.

A message counts when its answer arrives inside the measured window
[start + warmup, start + warmup + duration]; its latency is write -> read.
Errors are counted by status code; a stream that fails reopens a new
session after the server's retry hint (or 5 ms) and goes on.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from . import aio_run

METHOD = "/lstm.v1.LstmService/Stream"
TEXT = (
    b"First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
    b"First Citizen: You are all resolved rather to die than to famish? All: Resolved. resolved. "
)


@dataclass(frozen=True)
class Spec:
    target: str
    streams: int
    tokens: int
    first: int  # global index of this worker's first stream (varies the text)
    streams_per_channel: int = 64
    top_k: Optional[int] = None
    parse: bool = False  # parse every answer, as a real client would


def _requests(tokens: int, offset: int, count: int = 32) -> List[bytes]:
    from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

    out = []
    for i in range(count):
        start = (offset * 7 + i * tokens) % (len(TEXT) - tokens)
        step = pb.StreamStep(input=pb.Input(tokens=list(TEXT[start : start + tokens])))
        out.append(pb.StreamRequest(step=step).SerializeToString())
    return out


class _Stream:
    def __init__(self, method, spec: Spec, index: int, rec: "_Record") -> None:
        self.method, self.spec, self.rec = method, spec, rec
        self.requests = _requests(spec.tokens, spec.first + index)
        self.sent = index
        self.call = None
        self.retry_after = 0.005

    async def open(self) -> bool:
        import grpc

        from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

        sid = "bench-" + uuid.uuid4().hex
        output = pb.OutputOptions(top_k=self.spec.top_k) if self.spec.top_k is not None else None
        request = pb.StreamRequest(open=pb.OpenStream(session_id=sid, create=True, end_with_stream=True, output=output))
        call = self.method(metadata=(("x-session-id", sid),))
        try:
            await call.write(request.SerializeToString())
            reply = await call.read()
            if reply is grpc.aio.EOF or pb.StreamResponse.FromString(reply).WhichOneof("kind") != "opened":
                self.rec.errors["BAD_RESPONSE"] += 1
                call.cancel()
                return False
            await call.write(self.requests[0])
            reply = await call.read()  # first step: parsed and checked; not timed
            if reply is grpc.aio.EOF or pb.StreamResponse.FromString(reply).result.consumed != self.spec.tokens:
                self.rec.errors["BAD_RESPONSE"] += 1
                call.cancel()
                return False
        except Exception as exc:  # noqa: BLE001 - every failure is counted by its code
            await self._failed(call, exc)
            return False
        self.call = call
        return True

    async def _failed(self, call, exc: BaseException) -> None:
        import grpc

        code, hint = type(exc).__name__, None
        if isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code().name
            meta = dict(exc.trailing_metadata() or ())
            hint = meta.get("retry-after-ms")
        self.rec.errors[code] += 1
        call.cancel()
        self.call = None
        self.retry_after = min(1.0, int(hint) / 1000.0) if hint and str(hint).isdigit() else 0.005

    async def loop(self, start: float, end: float) -> None:
        import grpc

        from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

        rec, requests, now = self.rec, self.requests, time.monotonic
        parse = pb.StreamResponse.FromString if self.spec.parse else None
        while now() < end:
            call = self.call
            if call is None:
                await asyncio.sleep(self.retry_after)
                if now() < end:
                    await self.open()
                continue
            self.sent += 1
            t0 = now()
            try:
                await call.write(requests[self.sent % len(requests)])
                reply = await call.read()
            except Exception as exc:  # noqa: BLE001
                await self._failed(call, exc)
                continue
            if parse is not None and reply is not grpc.aio.EOF:
                parse(reply)
            t1 = now()
            if reply is grpc.aio.EOF:
                rec.errors["STREAM_ENDED"] += 1
                self.call = None
            elif start <= t1 <= end:
                rec.latencies.append(t1 - t0)

    async def close(self) -> None:
        if self.call is None:
            return
        try:
            await self.call.done_writing()
            await asyncio.wait_for(self.call.read(), 5.0)
        except Exception:  # noqa: BLE001 - closing; the window is over
            pass
        self.call.cancel()


class _Record:
    def __init__(self) -> None:
        self.latencies: List[float] = []
        self.errors: Counter = Counter()


async def _run(spec: Spec, conn) -> dict:
    import grpc

    rec = _Record()
    per = max(1, spec.streams_per_channel)
    options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
    channels = [grpc.aio.insecure_channel(spec.target, options=options) for _ in range(-(-spec.streams // per))]
    streams = [_Stream(channels[i // per].stream_stream(METHOD), spec, i, rec) for i in range(spec.streams)]
    await asyncio.gather(*(s.open() for s in streams))
    loop = asyncio.get_running_loop()
    conn.send(("ready", sum(s.call is not None for s in streams)))
    start, end = await loop.run_in_executor(None, conn.recv)
    cpu: Dict[str, float] = {}

    async def meter() -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        cpu["start"] = time.process_time()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        cpu["end"] = time.process_time()

    await asyncio.gather(meter(), *(s.loop(start, end) for s in streams))
    await asyncio.gather(*(s.close() for s in streams))
    for channel in channels:
        await channel.close()
    return {"latencies": np.asarray(rec.latencies), "errors": dict(rec.errors), "channels": len(channels),
            "cpu_seconds": cpu.get("end", 0.0) - cpu.get("start", 0.0)}


def _worker(conn) -> None:
    while True:
        spec = conn.recv()
        if spec is None:
            return
        try:
            conn.send(("result", aio_run(_run(spec, conn))))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
            conn.send(("error", repr(exc)))


class ClientPool:
    """Client processes, started once and reused for every measurement."""

    def __init__(self, processes: int = 2, streams_per_channel: int = 64, top_k: Optional[int] = None,
                 parse: bool = False) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds grpc/onnxruntime threads
        self.streams_per_channel, self.top_k, self.parse = streams_per_channel, top_k, parse
        self.conns, self.procs = [], []
        for _ in range(max(1, processes)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def _recv(self, conn, timeout: float):
        if not conn.poll(timeout):
            raise RuntimeError(f"client process did not answer within {timeout:.0f} s")
        kind, value = conn.recv()
        if kind == "error":
            raise RuntimeError(f"client process failed: {value}")
        return value

    def run(self, target: str, streams: int, tokens: int, warmup: float, duration: float,
            on_start: Callable[[], None] = lambda: None, on_stop: Callable[[], None] = lambda: None) -> dict:
        """Drive ``streams`` sessions; ``on_start``/``on_stop`` are called at the window's edges."""
        used = self.conns[: min(len(self.conns), streams)]
        shares = [streams // len(used) + (i < streams % len(used)) for i in range(len(used))]
        first = 0
        for conn, share in zip(used, shares):
            conn.send(Spec(target, share, tokens, first, self.streams_per_channel, self.top_k, self.parse))
            first += share
        opened = sum(self._recv(conn, 120.0) for conn in used)
        start = time.monotonic() + warmup
        end = start + duration
        for conn in used:
            conn.send((start, end))
        time.sleep(max(0.0, start - time.monotonic()))
        on_start()
        time.sleep(max(0.0, end - time.monotonic()))
        on_stop()
        parts = [self._recv(conn, 60.0 + duration) for conn in used]
        return summarize(parts, streams, tokens, duration, opened, len(used))

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(5.0)
            if proc.is_alive():
                proc.terminate()

    def __enter__(self) -> "ClientPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summarize(parts: List[dict], streams: int, tokens: int, duration: float, opened: int, processes: int) -> dict:
    lat = np.concatenate([p["latencies"] for p in parts]) * 1000.0
    errors: Counter = Counter()
    for p in parts:
        errors.update(p["errors"])
    msgs = len(lat) / duration
    pct = np.percentile(lat, [50, 90, 99]) if len(lat) else [float("nan")] * 3
    return {
        "streams": streams, "tokens_per_message": tokens, "messages": int(len(lat)),
        "msgs_per_s": msgs, "tokens_per_s": msgs * tokens,
        "latency_ms": {"p50": float(pct[0]), "p90": float(pct[1]), "p99": float(pct[2]),
                       "mean": float(lat.mean()) if len(lat) else float("nan"),
                       "max": float(lat.max()) if len(lat) else float("nan")},
        "errors": dict(errors), "error_count": int(sum(errors.values())),
        "opened": opened, "client_processes": processes,
        # HTTP/2 connections: what a server's SO_REUSEPORT fronts share out, not streams
        "connections": sum(p.get("channels", 0) for p in parts),
        "client_cpu": sum(p["cpu_seconds"] for p in parts) / duration,
    }
