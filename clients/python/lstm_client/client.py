"""The blocking client: Client and its StreamSession.

    from lstm_client import Client
    with Client("127.0.0.1:50051") as client:
        print(client.generate_text("ROMEO:", max_tokens=100, seed=1))
        with client.stream() as s:        # a session that lives as long as the stream
            print(s.send("To be, or not").predictions[-1].top[0].text)

Its methods are defined once in api.py / streams.py (shared with AsyncClient).
Every call that names a session sends its id as ``x-session-id`` metadata so
a proxy can route it to the replica holding the state; new sessions get a
128-bit random id made here.
"""
from __future__ import annotations

import queue
import time
from typing import Any

import grpc

from .api import Api
from .errors import ClientError
from .ops import END, Health, Next, OpenServerStream, Read, Sleep, Unary, Write, run, sync_method
from .requests import session_metadata
from .streams import StreamApi


class StreamSession(StreamApi):
    """One bidirectional Stream, driven synchronously: ``send`` returns its answer."""

    _wrap = staticmethod(sync_method)

    def __init__(self, client: "Client", *args: Any) -> None:
        super().__init__(client, *args)
        self._requests: "queue.Queue[Any]" = queue.Queue()
        self._responses = client.stub.Stream(iter(self._requests.get, None),
                                             metadata=session_metadata(self.session_id))
        run(self._open(), self._perform)

    def _perform(self, op: Any) -> Any:
        try:
            if isinstance(op, Write):
                return self._requests.put(op.request)
            if isinstance(op, Read):
                return next(self._responses, END)
        except grpc.RpcError as exc:
            raise ClientError.from_rpc_error(exc) from None
        raise TypeError(f"not a stream operation: {op!r}")

    def close(self) -> None:
        """End the stream after the answers in flight (a session made for it ends too)."""
        self._requests.put(None)
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError as exc:
            raise ClientError.from_rpc_error(exc) from None

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self._responses.cancel()
            return
        self.close()


class Client(Api):
    """Blocking client. Errors raise ClientError (a grpc.RpcError: ``.code()``, ``.details()``, and the
    server's reason, field violations and retry delay). ``retry=True`` resends safely (retry.py)."""

    _wrap = staticmethod(sync_method)
    _stream_class = StreamSession
    _aio = False

    def _perform(self, op: Any) -> Any:
        try:
            return self._do(op)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _do(self, op: Any) -> Any:
        if isinstance(op, (Unary, OpenServerStream)):
            rpc = getattr(self.stub, op.method)
            return rpc(op.request, timeout=self.timeout, metadata=session_metadata(op.session_id))
        if isinstance(op, Next):
            return next(op.handle, END)
        if isinstance(op, Sleep):
            return time.sleep(op.seconds)
        if isinstance(op, Health):
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            request = health_pb2.HealthCheckRequest(service=op.service)
            status = health_pb2_grpc.HealthStub(self.channel).Check(request, timeout=self.timeout).status
            return health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        raise TypeError(f"not a client operation: {op!r}")

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
