"""The optional HTTP port (--http-port, off by default): the explain page and
a small JSON endpoint that forwards to this server's own gRPC port.

    GET  /                 the page (static/index.html, static/explain.js)
    GET  /api/model        lstm.v1 GetModel as JSON
    POST /api/explain      an lstm.v1 ExplainRequest as JSON -> ExplainResponse as JSON

The endpoint is a bridge, not a second API: it calls Explain over gRPC on
127.0.0.1, so validation, limits, draining, metrics (and auth, once the gRPC
edge has it) are exactly the gRPC ones. Its status maps to HTTP (400, 404,
409, 412, 429, 503). Stdlib only (http.server in threads): the page is a
debugging aid, not a serving path, and adds no dependency.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Optional

import grpc
from google.protobuf import json_format

from ...proto.lstm.v1 import lstm_pb2 as pb
from ...proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

log = logging.getLogger("service.web")
MAX_BODY = 64 * 1024
CALL_TIMEOUT = 30.0
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/explain.js": ("explain.js", "text/javascript; charset=utf-8")}
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 412, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
}


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: "ExplainHTTPServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # into our logger, not stderr
        log.debug("http %s", fmt % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"code": code, "message": message})

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path in STATIC:
            name, content_type = STATIC[path]
            return self._send(200, _static(name), content_type)
        if path == "/api/model":
            return self._call(lambda stub: stub.GetModel(pb.GetModelRequest(), timeout=CALL_TIMEOUT,
                                                         metadata=self._credentials()))
        self._error(404, "NOT_FOUND", f"no page at {path[:100]!r}: try / or /api/model")

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/api/explain":
            return self._error(404, "NOT_FOUND", "POST only to /api/explain")
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            return self._error(400, "INVALID_ARGUMENT", f"send a JSON body of 1 to {MAX_BODY} bytes")
        try:
            request = json_format.Parse(self.rfile.read(length), pb.ExplainRequest())
        except json_format.ParseError as exc:
            return self._error(400, "INVALID_ARGUMENT", f"not an lstm.v1.ExplainRequest in JSON: {exc}")
        metadata = (("x-session-id", request.session_id),) if request.session_id else ()
        self._call(lambda stub: stub.Explain(request, timeout=CALL_TIMEOUT, metadata=metadata + self._credentials()))

    def _credentials(self):
        """The caller's Authorization header, passed on as gRPC metadata: the gRPC edge decides."""
        value = self.headers.get("Authorization")
        return (("authorization", value),) if value else ()

    def _call(self, method) -> None:
        try:
            reply = method(self.server.stub())
        except grpc.RpcError as exc:
            status = HTTP_STATUS.get(exc.code(), 500)
            return self._error(status, exc.code().name, exc.details() or "")
        self._json(200, json_format.MessageToDict(reply, preserving_proto_field_name=True))


class ExplainHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, grpc_target: str) -> None:
        super().__init__((host, port), _Handler)
        self.grpc_target = grpc_target
        self._channel: Optional[grpc.Channel] = None
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def stub(self) -> pb_grpc.LstmServiceStub:
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(self.grpc_target)
            return pb_grpc.LstmServiceStub(self._channel)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> int:
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._channel is not None:
            self._channel.close()


def loopback_target(host: str, grpc_port: int) -> str:
    """Where this process's own gRPC port is reachable from inside it."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"
