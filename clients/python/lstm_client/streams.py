"""A Stream call driving one session: the opening and each step, written once.

StreamSession (blocking) and AsyncStreamSession (asyncio) run these
operation generators (ops.py) on their own call, so their ``send`` has one
definition and one signature.
"""
from __future__ import annotations

import uuid
from typing import Any, Callable, Optional, Sequence

import grpc

from .errors import ClientError
from .ops import END, Read, Steps, Write, method
from .proto.lstm.v1 import lstm_pb2 as pb
from .requests import open_request, step_request
from .session_ids import new_session_id


class StreamApi:
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, fn in vars(StreamApi).items():
            kind = getattr(fn, "__lstm_kind__", None)
            if kind:
                setattr(cls, name, cls._wrap(fn, kind))

    @staticmethod
    def _wrap(fn: Callable, kind: str) -> Callable:
        raise NotImplementedError

    def __init__(self, client, session_id: Optional[str], ttl: int, output: pb.OutputOptions,
                 end_with_stream: Optional[bool]) -> None:
        self.create = not session_id
        self.session_id = session_id or new_session_id()
        # A session made for this stream ends with it unless told otherwise.
        self.end_with_stream = True if self.create and end_with_stream is None else end_with_stream
        self._client, self._ttl, self._output = client, ttl, output
        self.session: Optional[pb.Session] = None
        # With a retry policy the open carries a request id: reopening with the same one (the same
        # open, e.g. after its reply was lost) attaches to the session it opened, creating none.
        self.request_id = str(uuid.uuid4()) if client.retry is not None else ""
        self._seen: Optional[int] = None  # the session's count after the last reply read

    def _open(self) -> Steps:
        yield Write(open_request(self.session_id, self.create, self._ttl, self.end_with_stream, self._output,
                                 self.request_id))
        self.session = (yield from self._read()).opened
        self._seen = self.session.steps
        return self.session

    @method("unary")
    def send(self, text: Optional[str] = None, *, tokens: Optional[Sequence[int]] = None,
             output: Optional[pb.OutputOptions] = None, tag: str = "", start: bool = False, end: bool = False,
             expected_steps: Optional[int] = None) -> pb.StepResult:
        """Feed one step; returns its StepResult (answers come in order, one per step). If the
        stream fails, the client's next call on this session rewinds to the last step it read."""
        if expected_steps is None:
            expected_steps = self._client.seen.pop(self.session_id, None)
        yield Write(step_request(text, tokens, output, tag, start, end, expected_steps))
        try:
            result = (yield from self._read()).result
        except ClientError:
            if self._seen is not None:
                self._client.seen[self.session_id] = self._seen
            raise
        self._seen = result.steps
        return result

    def _read(self) -> Steps:
        response = yield Read()
        if response is END:
            raise ClientError(grpc.StatusCode.UNAVAILABLE, "the server ended the stream without an answer")
        return response
