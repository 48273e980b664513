"""inference.GRPCInferenceService (KServe v2 / Triton) over the same engine as lstm.v1.

Errors go through edge/rpc.py's ``rpc_handler`` (status.py builds the status), and
admission is lstm.v1's: one draining switch and one in-flight count for both
services. On ModelStreamInfer a failed request does not end the stream: its
reply carries ``error_message`` ("CODE: message") and the request's id, as
Triton does, and the stream goes on.
"""
from __future__ import annotations

import time
from importlib import metadata as dist

from ...api.errors import ServiceError
from ...proto.inference import grpc_service_pb2 as pb
from ...proto.inference import grpc_service_pb2_grpc as pb_grpc
from ...api.values import ANYONE, always
from ...api.engine import EngineApi
from ..lstm_v1 import LstmServicer
from ...proc import budget
from ..rpc import live_check, rpc_handler
from . import infer, model, tensors
from .stream import serve_stream

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = SERVICE.full_name  # inference.GRPCInferenceService
EXTENSIONS = ["sequence", "model_configuration", "parameters", "statistics"]
IMPLEMENTED = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig",
               "ModelInfer", "ModelStreamInfer", "ModelStatistics")


class Unimplemented(ServiceError):
    code = "UNIMPLEMENTED"
    default_reason = "UNIMPLEMENTED"


def _version() -> str:
    try:
        return dist.version("lstm-service")
    except dist.PackageNotFoundError:
        return "0"


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``edge`` is the lstm.v1 servicer: its admission, draining and request metrics apply here too."""

    def __init__(self, engine: EngineApi, edge: LstmServicer) -> None:
        self.engine = engine
        self.edge = edge
        self.card = engine.card
        self.stats = model.Statistics()
        self.version = _version()

    @property
    def auth(self):
        """lstm.v1's: one tokens file, one set of open calls a reload can end."""
        return self.edge.auth

    def admit(self) -> bool:
        return self.edge.admit()

    def finish(self, name: str, code: str, admitted: bool) -> None:
        self.edge.finish(name, code, admitted)

    # -- health: never refused, they answer "not ready" while draining --------
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=not self.edge.draining)

    async def ModelReady(self, request, context):
        known = request.name == self.card.name and request.version in ("", model.VERSION)
        return pb.ModelReadyResponse(ready=known and not self.edge.draining)

    # -- descriptions -----------------------------------------------------
    @rpc_handler
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="lstm-service", version=self.version, extensions=EXTENSIONS)

    @rpc_handler
    async def ModelMetadata(self, request, context):
        model.check_model(self.card, request.name, request.version)
        return model.metadata(self.card)

    @rpc_handler
    async def ModelConfig(self, request, context):
        model.check_model(self.card, request.name, request.version)
        providers = self.engine.runtime.providers
        return pb.ModelConfigResponse(config=model.config(self.card, self.engine.config, providers))

    @rpc_handler
    async def ModelStatistics(self, request, context):
        if request.name:
            model.check_model(self.card, request.name, request.version)
        return self.stats.message(self.card)

    # -- inference ------------------------------------------------------------
    async def infer(self, request, live=always, caller=ANYONE, seq=None, held=None) -> pb.ModelInferResponse:
        """One request -> its response; ServiceError (nothing changed) when refused. ``seq``: its
        sequence controls, read already; ``held``: the stream's holds (edge/kserve/held.py)."""
        began, ok = time.perf_counter_ns(), False
        mark = budget.start()  # the cost timers (proc/budget.py), None when off
        try:
            model.check_model(self.card, request.model_name, request.model_version)
            decoded = infer.decode(self.engine, request, seq)
            budget.add("kserve.check", mark)
            mark = budget.start()
            result = await infer.run(self.engine, decoded, live, caller, held)
            budget.add_wall("kserve.run", mark)
            mark = budget.start()
            response = pb.ModelInferResponse(model_name=self.card.name, model_version=model.VERSION, id=request.id)
            tensors.write_outputs(response, result.scores, decoded.outputs)
            if decoded.sequence.session_id:  # the count to send as expected_steps if this answer is in doubt
                response.parameters["sequence_steps"].int64_param = result.steps
            budget.add("kserve.encode", mark)
            ok = True
            return response
        finally:
            self.stats.record(ok, began)

    @rpc_handler
    async def ModelInfer(self, request, context):
        return await self.infer(request, live_check(context), self.auth.caller(context))

    @rpc_handler
    async def ModelStreamInfer(self, request_iterator, context):
        caller = self.auth.caller(context)
        slot = await self.engine.stream_slot(caller)  # a long-lived call: one of the caller's open streams
        try:
            async for reply in serve_stream(self, request_iterator, live_check(context), caller):
                yield reply
        finally:
            slot.release()


def _unimplemented(name: str):
    async def method(self, request, context):
        raise Unimplemented(
            f"{SERVICE_NAME}/{name} is not implemented by this server (one fixed model, no repository, shared "
            f"memory, trace or log settings); implemented: {', '.join(IMPLEMENTED)}"
        )

    method.__name__ = name
    return rpc_handler(method)


for _method in SERVICE.methods:
    if _method.name not in IMPLEMENTED:
        setattr(KServeServicer, _method.name, _unimplemented(_method.name))
