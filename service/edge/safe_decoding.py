"""Register a servicer with request decoding that cannot fail inside grpc.

grpc decodes each request before our handler runs; a corrupt message then
ends the call with UNKNOWN/INTERNAL and a traceback in the log. Here the
decoder hands such a message to the handler as ``Undecodable``, and the
handler answers INVALID_ARGUMENT (``check_decoded``) with one log line.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf.message_factory import GetMessageClass

from ..api.errors import InvalidArgument

log = logging.getLogger("service.handlers")


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes are not a valid message of its type."""

    type_name: str
    error: str


def check_decoded(request):
    """``request``, or InvalidArgument when it could not be decoded."""
    if isinstance(request, Undecodable):
        log.info("refused an undecodable %s: %s", request.type_name, request.error)
        raise InvalidArgument(f"the request is not a valid {request.type_name} message (protobuf decoding failed)",
                              reason="UNDECODABLE_REQUEST")
    return request


def _decoder(cls) -> Callable[[bytes], object]:
    def decode(data: bytes):
        try:
            return cls.FromString(data)
        except (protobuf_message.DecodeError, ValueError, RuntimeError) as exc:
            return Undecodable(cls.DESCRIPTOR.full_name, str(exc) or type(exc).__name__)

    return decode


def generic_handler(servicer, service_descriptor) -> grpc.GenericRpcHandler:
    """The handlers of every method of ``service_descriptor`` on ``servicer``, with safe decoding.
    Message classes come from the method descriptors, so a service whose messages live in
    a descriptor pool of their own (the KServe v2 protocol) registers the same way."""
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for method in service_descriptor.methods:
        request, response = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
        make = kinds[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_decoder(request),
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers)
