"""Credentials a client sends: a bearer token on every call, and TLS with an
optional client certificate (mutual TLS).

The token travels as ``authorization: Bearer <token>`` call metadata, added
by a channel interceptor, so it works on plaintext channels too (loopback
and tests); send it over TLS anywhere else.
"""
from __future__ import annotations

from typing import Optional

import grpc
import grpc.aio


class _Details(grpc.ClientCallDetails):
    """ClientCallDetails with other metadata (grpc's own class is a plain namedtuple-like object)."""

    def __init__(self, details, metadata) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _SyncToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                 grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(_Details(details, _metadata(details, self.token)), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(_Details(details, _metadata(details, self.token)), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(_Details(details, _metadata(details, self.token)), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(_Details(details, _metadata(details, self.token)), requests)


def _metadata(details, token: str) -> list:
    return list(details.metadata or ()) + [("authorization", f"Bearer {token}")]


def _aio_token(token: str) -> list:
    def fix(details):
        return grpc.aio.ClientCallDetails(details.method, details.timeout, _metadata(details, token),
                                          details.credentials, details.wait_for_ready)

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):
            return await continuation(fix(details), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, details, request):
            return await continuation(fix(details), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, details, requests):
            return await continuation(fix(details), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, details, requests):
            return await continuation(fix(details), requests)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]


def make_channel(target: str, tls: bool = False, root_certificates: Optional[bytes] = None, aio: bool = False,
                 token: Optional[str] = None, client_certificate: Optional[bytes] = None,
                 client_key: Optional[bytes] = None):
    """A grpc (or grpc.aio) channel: TLS when asked or when any certificate is given (the
    system roots unless ``root_certificates``), a client certificate for mutual TLS, and
    the bearer ``token`` on every call."""
    secure = tls or root_certificates or client_certificate
    credentials = grpc.ssl_channel_credentials(root_certificates, client_key, client_certificate) if secure else None
    if aio:
        interceptors = _aio_token(token) if token else None
        if credentials is not None:
            return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    channel = grpc.secure_channel(target, credentials) if credentials is not None else grpc.insecure_channel(target)
    return grpc.intercept_channel(channel, _SyncToken(token)) if token else channel
