"""ModelStreamInfer: many sequences on one stream, each in order.

perf_analyzer and tritonclient put several sequences on one stream and match
replies to requests by ``id``. Requests of different sequences run
concurrently (so the engine can batch them into one model call); requests of
one sequence run one after another, in the order they arrived. At most
``MAX_IN_FLIGHT`` requests of a stream run at once; beyond that the stream
is not read (HTTP/2 flow control pushes back on the client). Requests are
read through lstm.v1's reader, so a stream idle between requests is ended
as lstm.v1 streams are: UNAVAILABLE when the server drains, RESOURCE_EXHAUSTED
after --stream-idle-timeout (requests in flight are answered first).
"""
from __future__ import annotations

import asyncio
import functools
from typing import Dict, Optional

from ...api.errors import ServiceError
from ..error_status import bounded
from ...proto.inference import grpc_service_pb2 as pb
from . import sequence as sq
from .held import HeldSequences

MAX_IN_FLIGHT = 256
_DONE = object()


def error_reply(exc: ServiceError, request=None) -> pb.ModelStreamInferResponse:
    reply = pb.ModelStreamInferResponse(error_message=bounded(f"{exc.code}: {exc.message}"))
    if request is not None:
        reply.infer_response.id = request.id
        reply.infer_response.model_name = request.model_name
    return reply


async def _answer(servicer, request, seq: sq.Sequence, before: Optional[asyncio.Task], live,
                  caller, held: HeldSequences) -> pb.ModelStreamInferResponse:
    if before is not None:
        await asyncio.wait((before,))  # the same sequence's previous request, however it ended
    try:
        return pb.ModelStreamInferResponse(infer_response=await servicer.infer(request, live, caller, seq, held))
    except ServiceError as exc:
        return error_reply(exc, request)


async def _read(servicer, requests, replies: asyncio.Queue, live, caller) -> None:
    """Start a task per request; each puts its reply on ``replies``; _DONE when all are done."""
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    held = HeldSequences(servicer.engine, caller)  # its sequences' sessions, kept between their requests
    last: Dict[str, asyncio.Task] = {}  # session id -> the latest task of that sequence
    tasks: set = set()

    def finished(task: asyncio.Task, key: Optional[str]) -> None:
        tasks.discard(task)
        slots.release()
        if key and last.get(key) is task:
            del last[key]
        if not task.cancelled() and task.exception() is None:
            replies.put_nowait(task.result())

    ending: Optional[ServiceError] = None
    try:
        while True:
            try:
                request = await servicer.edge.next_request(requests)  # None at the end
            except ServiceError as exc:
                if exc.code != "INVALID_ARGUMENT":  # draining or idle: answer what is in flight, then end
                    ending = exc
                    break
                replies.put_nowait(error_reply(exc))  # an undecodable message
                continue
            if request is None:
                break
            try:
                seq = sq.sequence_of(request.parameters)  # read once: decode takes it from here
            except ServiceError as exc:
                replies.put_nowait(error_reply(exc, request))
                continue
            key = seq.session_id
            await slots.acquire()
            task = asyncio.ensure_future(_answer(servicer, request, seq, last.get(key) if key else None, live, caller,
                                                 held))
            tasks.add(task)
            if key:
                last[key] = task
            task.add_done_callback(functools.partial(finished, key=key))
        while tasks:
            done, _ = await asyncio.wait(set(tasks))
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # a bug, not a refused request: the stream ends INTERNAL
        if ending is not None:
            raise ending
    finally:
        for task in tasks:
            task.cancel()
        held.close()
        replies.put_nowait(_DONE)


async def serve_stream(servicer, request_iterator, live, caller):
    """Yield replies as they are ready; ends when the client is done and every reply was sent."""
    replies: asyncio.Queue = asyncio.Queue()
    reader = asyncio.ensure_future(_read(servicer, request_iterator.__aiter__(), replies, live, caller))
    try:
        while True:
            reply = await replies.get()
            if reply is _DONE:
                break
            yield reply
        await reader  # raises what ended the reader, if anything did
    finally:
        if not reader.done():
            reader.cancel()
