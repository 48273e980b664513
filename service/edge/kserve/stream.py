"""ModelStreamInfer: many sequences on one stream, each in order.

perf_analyzer and tritonclient put several sequences on one stream and match
replies to requests by ``id``. Requests of different sequences run
concurrently (so the engine can batch them into one model call); requests of
one sequence run one after another, in the order they arrived. At most
``MAX_IN_FLIGHT`` requests of a stream run at once; beyond that the stream
is not read (HTTP/2 flow control pushes back on the client). Requests are
read through lstm.v1's reader, so a stream idle between requests is ended
as lstm.v1 streams are: UNAVAILABLE when the server drains, RESOURCE_EXHAUSTED
after --stream-idle-timeout (requests in flight are answered first). The
stream keeps each sequence's session held between its requests (held.py).

One reader task starts a task per request; a finished request appends its
reply to a deque the writer (the generator gRPC iterates) empties, waking it
only when it waits on an empty deque. perf_analyzer puts every sequence on
one stream, so this path is paid per message: no queue, semaphore or done-
callback machinery beyond one task and one append.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Deque, Dict, Optional, Set

from ...api.errors import ServiceError
from ..error_status import bounded
from ...proto.inference import grpc_service_pb2 as pb
from . import sequence as sq
from .held import HeldSequences

MAX_IN_FLIGHT = 256


def error_reply(exc: ServiceError, request=None) -> pb.ModelStreamInferResponse:
    reply = pb.ModelStreamInferResponse(error_message=bounded(f"{exc.code}: {exc.message}"))
    if request is not None:
        reply.infer_response.id = request.id
        reply.infer_response.model_name = request.model_name
    return reply


class _Stream:
    """One ModelStreamInfer call's requests in flight and replies ready to send."""

    def __init__(self, servicer, live, caller) -> None:
        self.servicer, self.live, self.caller = servicer, live, caller
        self.loop = asyncio.get_running_loop()
        self.held = HeldSequences(servicer.engine, caller, self.loop)  # its sequences' sessions, kept
        self.replies: Deque[pb.ModelStreamInferResponse] = deque()
        self.tasks: Set[asyncio.Task] = set()
        self.last: Dict[str, asyncio.Task] = {}  # session id -> the latest task of that sequence
        self.writer: Optional[asyncio.Future] = None  # the writer, waiting for a reply (or the end)
        self.room: Optional[asyncio.Future] = None  # the reader, waiting for a request to finish
        self.failure: Optional[BaseException] = None  # a bug in a request's task: the stream ends INTERNAL

    def put(self, reply: pb.ModelStreamInferResponse) -> None:
        self.replies.append(reply)
        self.wake_writer()

    def wake_writer(self, _=None) -> None:
        writer = self.writer
        if writer is not None and not writer.done():
            writer.set_result(None)

    async def answer(self, request, seq: sq.Sequence, before: Optional[asyncio.Task]) -> None:
        try:
            if before is not None and not before.done():
                await asyncio.wait((before,))  # the same sequence's previous request, however it ended
            try:
                response = await self.servicer.infer(request, self.live, self.caller, seq, self.held)
                reply = pb.ModelStreamInferResponse(infer_response=response)
            except ServiceError as exc:
                reply = error_reply(exc, request)
            self.put(reply)
        except Exception as exc:  # a bug, not a refused request: the writer ends the stream with it
            if self.failure is None:
                self.failure = exc
            self.wake_writer()
        finally:
            self._finished(seq.session_id)

    def _finished(self, key: str) -> None:
        task = asyncio.current_task(self.loop)
        self.tasks.discard(task)  # type: ignore[arg-type]
        if key and self.last.get(key) is task:
            del self.last[key]
        room = self.room
        if room is not None and not room.done():
            room.set_result(None)

    def start(self, request, seq: sq.Sequence) -> None:
        key = seq.session_id
        task = self.loop.create_task(self.answer(request, seq, self.last.get(key) if key else None))
        self.tasks.add(task)
        if key:
            self.last[key] = task

    async def read(self, requests) -> None:
        """Start a task per request until the client is done or the stream must end."""
        edge = self.servicer.edge
        ending: Optional[ServiceError] = None
        try:
            while True:
                try:
                    request = await edge.next_request(requests)  # None at the end
                except ServiceError as exc:
                    if exc.code != "INVALID_ARGUMENT":  # draining or idle: answer what is in flight, then end
                        ending = exc
                        break
                    self.put(error_reply(exc))  # an undecodable message
                    continue
                if request is None:
                    break
                try:
                    seq = sq.sequence_of(request.parameters)  # read once: decode takes it from here
                except ServiceError as exc:
                    self.put(error_reply(exc, request))
                    continue
                while len(self.tasks) >= MAX_IN_FLIGHT:
                    self.room = self.loop.create_future()
                    await self.room
                    self.room = None
                self.start(request, seq)
            while self.tasks:
                await asyncio.wait(set(self.tasks))
            if ending is not None:
                raise ending
        finally:
            for task in self.tasks:
                task.cancel()
            self.held.close()


async def serve_stream(servicer, request_iterator, live, caller):
    """Yield replies as they are ready; ends when the client is done and every reply was sent."""
    stream = _Stream(servicer, live, caller)
    reader = stream.loop.create_task(stream.read(request_iterator.__aiter__()))
    reader.add_done_callback(stream.wake_writer)
    replies = stream.replies
    try:
        while True:
            while replies:
                yield replies.popleft()
            if reader.done():
                break
            if stream.failure is not None:
                raise stream.failure
            stream.writer = stream.loop.create_future()
            await stream.writer
            stream.writer = None
        await reader  # raises what ended the reader, if anything did
    finally:
        if not reader.done():
            reader.cancel()
