"""The served model as the KServe v2 protocol describes it: metadata, the
Triton-style model configuration (a stateful model: sequence batching with
its control inputs) and inference statistics.

One model, version "1"; its name is the model card's name.
"""
from __future__ import annotations

import time

from ...api.errors import NotFound
from ...proto.inference import grpc_service_pb2 as pb
from ...proto.inference import model_config_pb2 as mc
from .tensors import INPUT_IDS, LOGPROBS, TEXT, TOP_IDS, TOP_PROBS

VERSION = "1"
PLATFORM = "onnxruntime_onnx"
Control = mc.ModelSequenceBatching.Control


def check_model(card, name: str, version: str = "") -> None:
    """NOT_FOUND unless ``name`` (and ``version``, if given) is what this server serves."""
    if name != card.name:
        raise NotFound(f"model {name[:80]!r} is not served here; this server serves {card.name!r}",
                       reason="MODEL_NOT_FOUND", field="model_name")
    if version not in ("", VERSION):
        raise NotFound(f"model {card.name!r} has no version {version[:20]!r}; it has version {VERSION!r} only",
                       reason="MODEL_NOT_FOUND", field="model_version")


def metadata(card) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=card.name, versions=[VERSION], platform=PLATFORM,
        inputs=[tensor(name=INPUT_IDS, datatype="INT64", shape=[1, -1]),
                tensor(name=TEXT, datatype="BYTES", shape=[1])],
        outputs=[tensor(name=TOP_IDS, datatype="INT64", shape=[1, -1, -1]),
                 tensor(name=TOP_PROBS, datatype="FP32", shape=[1, -1, -1]),
                 tensor(name=LOGPROBS, datatype="FP32", shape=[1, -1, card.vocab_size])],
    )


def config(card, service_config, providers) -> mc.ModelConfig:
    """max_batch_size 0: shapes are exactly as declared, one sequence per request;
    the server still batches steps of different sequences into one model call."""
    c = mc.ModelConfig(name=card.name, platform=PLATFORM, backend="onnxruntime", max_batch_size=0)
    c.input.add(name=INPUT_IDS, data_type=mc.TYPE_INT64, dims=[1, -1], optional=True)
    c.input.add(name=TEXT, data_type=mc.TYPE_STRING, dims=[1], optional=True)
    c.output.add(name=TOP_IDS, data_type=mc.TYPE_INT64, dims=[1, -1, -1])
    c.output.add(name=TOP_PROBS, data_type=mc.TYPE_FP32, dims=[1, -1, -1])
    c.output.add(name=LOGPROBS, data_type=mc.TYPE_FP32, dims=[1, -1, card.vocab_size])
    seq = c.sequence_batching
    seq.max_sequence_idle_microseconds = int(service_config.session_ttl * 1e6)
    seq.direct.max_queue_delay_microseconds = int(service_config.max_batch_delay_ms * 1000)
    # The control inputs a Triton stateful model declares. Here the server reads
    # the sequence_id/sequence_start/sequence_end request parameters itself and
    # the model never sees these tensors; clients and perf_analyzer look for them.
    for name, kind in (("START", Control.CONTROL_SEQUENCE_START), ("END", Control.CONTROL_SEQUENCE_END),
                       ("READY", Control.CONTROL_SEQUENCE_READY)):
        seq.control_input.add(name=name).control.add(kind=kind, int32_false_true=[0, 1])
    seq.control_input.add(name="CORRID").control.add(kind=Control.CONTROL_SEQUENCE_CORRID, data_type=mc.TYPE_UINT64)
    gpu = any("CUDA" in p for p in providers)
    group_kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    c.instance_group.add(name=card.name, count=1, kind=group_kind)
    c.parameters["session_ttl_seconds"].string_value = f"{service_config.session_ttl:g}"
    c.parameters["max_tokens_per_message"].string_value = str(service_config.max_tokens_per_message)
    return c


class Statistics:
    """Counts for ModelStatistics (perf_analyzer reads them around each measurement)."""

    def __init__(self) -> None:
        self.success_count = self.success_ns = self.fail_count = self.fail_ns = 0
        self.executions = 0  # model steps run (a request is one step)
        self.last_ms = 0

    def record(self, ok: bool, began_ns: int) -> None:
        ns = time.perf_counter_ns() - began_ns
        if ok:
            self.success_count += 1
            self.success_ns += ns
            self.executions += 1
            self.last_ms = int(time.time() * 1000)
        else:
            self.fail_count += 1
            self.fail_ns += ns

    def message(self, card) -> pb.ModelStatisticsResponse:
        d = pb.StatisticDuration
        stats = pb.InferStatistics(
            success=d(count=self.success_count, ns=self.success_ns), fail=d(count=self.fail_count, ns=self.fail_ns),
            queue=d(count=self.success_count), compute_input=d(count=self.success_count),
            compute_infer=d(count=self.success_count, ns=self.success_ns), compute_output=d(count=self.success_count),
        )
        model = pb.ModelStatistics(
            name=card.name, version=VERSION, last_inference=self.last_ms, inference_count=self.success_count,
            execution_count=self.executions, inference_stats=stats,
        )
        return pb.ModelStatisticsResponse(model_stats=[model])
