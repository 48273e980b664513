"""Server reflection, v1 and v1alpha.

grpcio-reflection ships only grpc.reflection.v1alpha, but current grpcurl and
Node reflection clients ask for grpc.reflection.v1 first. The two protocols
have identical messages (v1 is v1alpha renamed), so v1 is the same servicer
registered under the v1 method path: the bytes on the wire are the same.
"""
from __future__ import annotations

from typing import Iterable

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as pb

V1_SERVICE = "grpc.reflection.v1.ServerReflection"


def enable(server: grpc.aio.Server, service_names: Iterable[str], pool=None) -> None:
    """Reflection for ``service_names``; ``pool``: the descriptor pool to answer from
    (the default pool unless a service's messages live in one of their own)."""
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE)
    servicer = reflection.aio.ReflectionServicer(names, pool=pool)
    reflection.enable_server_reflection(names, server, pool=pool)  # v1alpha
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=pb.ServerReflectionRequest.FromString,
        response_serializer=pb.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))
