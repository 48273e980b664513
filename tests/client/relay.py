"""A real gRPC relay in front of the server, for the client tests.

It forwards every lstm.v1 and health call as raw bytes (grpc.GenericRpcHandler),
records each call's method and ``x-session-id`` header, and can be told to
lose the next call of a method the way a network does:

- ``drop("Predict", "request")``: fail it UNAVAILABLE before the server sees it;
- ``drop("Predict", "reply")``: forward it (the server applies it), then fail
  it UNAVAILABLE instead of returning the answer (for a server stream: after
  the first message).

The server's own errors pass through with their trailers (status details).
"""
from __future__ import annotations

import threading
from concurrent import futures
from typing import Dict, List, Optional, Tuple

import grpc

STREAMING = {"Generate": "unary_stream", "Stream": "stream_stream"}


class Relay(grpc.GenericRpcHandler):
    def __init__(self, backend: str) -> None:
        self.backend = grpc.insecure_channel(backend)
        self.calls: List[Tuple[str, Optional[str]]] = []  # (method, x-session-id)
        self._drops: Dict[str, str] = {}
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(16))
        self.server.add_generic_rpc_handlers((self,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    def drop(self, method: str, what: str) -> None:
        assert what in ("request", "reply", "cut")
        with self._lock:
            self._drops[method] = what

    def __enter__(self) -> "Relay":
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(0)
        self.backend.close()

    def service(self, details: grpc.HandlerCallDetails):
        path = details.method
        name = path.rsplit("/", 1)[1]
        metadata = tuple((k, v) for k, v in details.invocation_metadata if k == "x-session-id")
        with self._lock:
            self.calls.append((name, dict(metadata).get("x-session-id")))
            fault = self._drops.pop(name, None)
        kind = STREAMING.get(name, "unary_unary") if "lstm.v1" in path else "unary_unary"
        if kind == "unary_unary":
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: self._unary(path, req, ctx, metadata, fault))
        if kind == "unary_stream":
            return grpc.unary_stream_rpc_method_handler(
                lambda req, ctx: self._server_stream(path, req, ctx, metadata, fault))
        return grpc.stream_stream_rpc_method_handler(lambda reqs, ctx: self._bidi(path, reqs, ctx, metadata))

    def _unary(self, path, request, context, metadata, fault):
        if fault == "request":
            context.abort(grpc.StatusCode.UNAVAILABLE, "relay: the request was lost")
        try:
            reply = self.backend.unary_unary(path)(request, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            _pass_error(exc, context)
        if fault == "reply":
            context.abort(grpc.StatusCode.UNAVAILABLE, "relay: the reply was lost")
        return reply

    def _server_stream(self, path, request, context, metadata, fault):
        if fault == "request":
            context.abort(grpc.StatusCode.UNAVAILABLE, "relay: the request was lost")
        call = self.backend.unary_stream(path)(request, metadata=metadata, timeout=30)
        try:
            for n, reply in enumerate(call):
                if fault == "reply" or (fault == "cut" and n == 2):  # "cut": after two replies went through
                    call.cancel()
                    context.abort(grpc.StatusCode.UNAVAILABLE, "relay: the reply was lost")
                yield reply
        except grpc.RpcError as exc:
            _pass_error(exc, context)

    def _bidi(self, path, requests, context, metadata):
        try:
            yield from self.backend.stream_stream(path)(requests, metadata=metadata)
        except grpc.RpcError as exc:
            _pass_error(exc, context)


def _pass_error(exc: grpc.RpcError, context) -> None:
    context.set_trailing_metadata(exc.trailing_metadata() or ())
    context.abort(exc.code(), exc.details())
