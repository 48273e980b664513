"""Python client for the lstm.v1 gRPC service (blocking and asyncio), and the ``lstm-client`` CLI.

Needs only grpcio and protobuf (plus the health-check and google.rpc status
protos); it carries its own copy of the generated lstm.v1 code.
"""
from .aio import AsyncClient, AsyncStreamSession
from .client import Client, StreamSession
from .errors import ClientError
from .proto.lstm.v1 import lstm_pb2 as pb
from .retry import RetryPolicy
from .targets import DEFAULT_PORT, DEFAULT_TARGET, normalize_target

__version__ = "0.1.0"
__all__ = ["AsyncClient", "AsyncStreamSession", "Client", "ClientError", "DEFAULT_PORT", "DEFAULT_TARGET",
           "RetryPolicy", "StreamSession", "normalize_target", "pb"]
