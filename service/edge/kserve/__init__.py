"""The KServe v2 / Triton gRPC protocol (inference.GRPCInferenceService) on the
lstm.v1 server's port, so tritonclient, perf_analyzer and other open inference
protocol clients work unchanged. docs/kserve.md has the whole story.

    servicer = KServeServicer(engine, lstm_servicer)
    add_to_server(servicer, server)
"""
from .register import add_to_server, reflection_pool
from .servicer import SERVICE_NAME, KServeServicer

__all__ = ["KServeServicer", "SERVICE_NAME", "add_to_server", "reflection_pool"]
