"""Putting the KServe v2 service on a grpc.aio server, and in reflection.

The generated inference.* messages live in a descriptor pool of their own
(tools/build_proto.py says why), so the request classes are found from
the method descriptors, not from protobuf's default symbol database; a
corrupt request reaches the handler as ``Undecodable`` and is answered
INVALID_ARGUMENT, as lstm.v1's are (service/edge/safe_decoding.py).
"""
from __future__ import annotations

from typing import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from ..safe_decoding import generic_handler
from ...proto.inference import POOL
from .servicer import SERVICE


def add_to_server(servicer, server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((generic_handler(servicer, SERVICE),))


def reflection_pool(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """One pool holding the files of every named service and of reflection itself (and
    their imports), from protobuf's default pool or ours, for the reflection servicer's
    ``pool`` argument (which replaces the default pool for every lookup)."""
    from grpc_reflection.v1alpha import reflection

    pool, added = descriptor_pool.DescriptorPool(), set()

    def add(file) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for name in (*service_names, reflection.SERVICE_NAME):
        for source in (POOL, descriptor_pool.Default()):
            try:
                add(source.FindFileContainingSymbol(name))
                break
            except KeyError:
                continue  # not there; a name in neither pool (an alias) is left out
    return pool
