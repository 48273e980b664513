"""Requests with every string and repeated field at, just past and far past its limits,
for every lstm.v1 request message and KServe's ModelInfer: the server must answer each
with a status whose message is at most 1 KB and whose details trailer is at most 4 KB
(docs/security.md, Bounded answers), however many offenders the request holds.

The fields are filled from the message descriptors, so a field added to a proto is
fuzzed without a change here. Sizes are drawn from LENGTHS / COUNTS (each limit of the
service and one past it, and far past: 100,000 layers, 3,000 KServe inputs of 305
characters); values are built from a pattern, not character by character, so a
megabyte-sized request costs hypothesis one draw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import assume, strategies as st

from lstm_service.service.proto.inference import grpc_service_pb2 as kpb
from lstm_service.service.proto.inference import grpc_service_pb2_grpc as kpb_grpc
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

from .calls import C

LENGTHS = (0, 1, 15, 16, 128, 129, 256, 257, 305, 4096, 4097, 65536)  # ids, stops, names, text
COUNTS = (0, 1, 2, 16, 17, 256, 3000, 4096, 4097, 100_000)  # tokens, layers, stops, channels, inputs
STRING_COUNTS = (0, 1, 17, 300, 3000)  # repeated strings, each up to 305+ characters
CHARS = ("k", "é", "\x00", "/", ".", "n")
NUMBERS = {F.TYPE_INT32: (-1, 0, 1, 2**31 - 1), F.TYPE_UINT32: (0, 1, 2, 257, 2**32 - 1),
           F.TYPE_INT64: (-1, 0, 1, 2**63 - 1), F.TYPE_UINT64: (0, 1, 2**64 - 1),
           F.TYPE_FLOAT: (0.0, 1.0, -1.0, 1e30, float("nan")), F.TYPE_DOUBLE: (0.0, 1.0, float("inf"))}
# lstm.v1 methods by request message (Stream is opened with its OpenStream, then one StreamStep).
LSTM_METHODS = {
    "Predict": pb.PredictRequest, "Generate": pb.GenerateRequest, "CreateSession": pb.CreateSessionRequest,
    "GetSession": pb.GetSessionRequest, "ResetSession": pb.ResetSessionRequest,
    "DeleteSession": pb.DeleteSessionRequest, "ForkSession": pb.ForkSessionRequest,
    "ListSessions": pb.ListSessionsRequest, "GetModel": pb.GetModelRequest,
    "ExportSession": pb.ExportSessionRequest, "ImportSession": pb.ImportSessionRequest,
    "Explain": pb.ExplainRequest, "Stream": pb.StreamStep,
}
MAX_DEPTH = 2
MAX_REQUEST_BYTES = 3 << 20  # under grpc's 4 MiB receive limit: the service's answer is what is tested
MAX_FIELD_BYTES = 1 << 20  # a repeated string field's count is cut to stay under this


@dataclass(frozen=True)
class AtLimits:
    """One request at its limits: the method (lstm.v1, or "ModelInfer" for KServe) and the message."""

    method: str
    request: Any
    opening: Any = None  # Stream: the OpenStream sent before ``request`` (a StreamStep)

    def __repr__(self) -> str:
        return f"AtLimits({self.method}, {self.request.ByteSize()} bytes)"


def _text(length: int, char: str) -> str:
    return (char * length)[:length] if char != "n" else "".join(f"{i % 10}" for i in range(length))


@st.composite
def strings(draw) -> str:
    return _text(draw(st.sampled_from(LENGTHS)), draw(st.sampled_from(CHARS)))


@st.composite
def _scalar(draw, field: F) -> Any:
    if field.type == F.TYPE_STRING:
        return draw(strings())
    if field.type == F.TYPE_BYTES:
        return b"\xff" * draw(st.sampled_from(LENGTHS))
    if field.type == F.TYPE_BOOL:
        return draw(st.booleans())
    if field.type == F.TYPE_ENUM:
        return draw(st.sampled_from([v.number for v in field.enum_type.values]))
    return draw(st.sampled_from(NUMBERS[field.type]))


@st.composite
def at_limits(draw, message_class, depth: int = 0):
    """A ``message_class`` message with a random subset of its fields at their limits."""
    message = message_class()
    for field in message_class.DESCRIPTOR.fields:
        if not draw(st.integers(0, 2)):  # about two fields in three are set
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue  # maps: KServe parameters get their own below
        if field.type == F.TYPE_MESSAGE:
            if depth >= MAX_DEPTH:
                continue
            if field.is_repeated:  # one drawn element, repeated: the count is what is at its limit
                container = getattr(message, field.name)
                count, first = draw(st.sampled_from((1, 17, 300))), container.add()
                first.CopyFrom(draw(at_limits(type(first), depth + 1)))
                for _ in range(count - 1):
                    container.add().CopyFrom(first)
            else:
                child = getattr(message, field.name)
                child.CopyFrom(draw(at_limits(type(child), depth + 1)))
        elif field.is_repeated:
            if field.type in (F.TYPE_STRING, F.TYPE_BYTES):
                one = draw(_scalar(field))
                count = min(draw(st.sampled_from(STRING_COUNTS)), MAX_FIELD_BYTES // max(1, len(one)))
                getattr(message, field.name).extend([one] * count)
            else:
                count, pattern = draw(st.sampled_from(COUNTS)), draw(st.sampled_from(("range", "same")))
                value = draw(_scalar(field))
                values = list(range(count)) if pattern == "range" and field.type != F.TYPE_FLOAT else [value] * count
                getattr(message, field.name).extend(values)
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


@st.composite
def kserve_infer(draw) -> "kpb.ModelInferRequest":
    """ModelInfer with many and long-named inputs, outputs and parameters (no sequence_start:
    nothing is created), the way 3,000 inputs of 305 characters made a 933,074-character message."""
    request = kpb.ModelInferRequest(model_name=draw(st.sampled_from(["tiny-lstm"] * 4 + ["", _text(305, "n")])),
                                    id=draw(strings()))
    name = _text(draw(st.sampled_from(LENGTHS[:9])), draw(st.sampled_from(CHARS)))  # up to 305 characters
    count = draw(st.sampled_from(COUNTS[:7]))
    for i in range(count):
        request.inputs.add(name=f"{i}{name}", datatype=draw(st.sampled_from(["INT64", "BYTES", "x" * 300])),
                           shape=[1, draw(st.sampled_from([1, 2, 4097]))])
    for i in range(draw(st.sampled_from(STRING_COUNTS))):
        request.outputs.add(name=f"{i}{name}")
    request.raw_input_contents.extend([b"\x01" * 8] * draw(st.sampled_from((0, 1, 2, 3000))))
    for i in range(draw(st.sampled_from((0, 1, 17, 300)))):
        request.parameters[f"{i}{name[:300]}"].string_param = name
    if draw(st.booleans()):
        request.parameters["sequence_id"].string_param = draw(strings())  # past 84 bytes: refused
    return request


@st.composite
def limit_requests(draw) -> AtLimits:
    method = draw(st.sampled_from(sorted(LSTM_METHODS) + ["ModelInfer"] * 2))
    if method == "ModelInfer":
        request = draw(kserve_infer())
        opening = None
    else:
        request = draw(at_limits(LSTM_METHODS[method]))
        opening = draw(at_limits(pb.OpenStream)) if method == "Stream" else None
    assume(request.ByteSize() + (opening.ByteSize() if opening is not None else 0) <= MAX_REQUEST_BYTES)
    return AtLimits(method, request, opening)


# -- running one -------------------------------------------------------------------------
ANSWERS = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS, C.FAILED_PRECONDITION, C.ABORTED,
           C.RESOURCE_EXHAUSTED}
TIMEOUT = 30.0  # seconds: a guard against a hang, far above any answer here
GENERATED = 3  # Generate replies read before the fuzzer cancels (a valid 4096-token one would be slow)


def _named(message) -> set:
    """Every session id a request names: a session it makes is one no twin tracks (a stray)."""
    ids = set()
    for field, value in message.ListFields():
        if field.name in ("session_id", "new_session_id") and isinstance(value, str):
            ids.add(value)
        elif field.type == F.TYPE_MESSAGE and not field.is_repeated:
            ids |= _named(value)
    return ids


def run_limits(runner, op) -> None:
    item: AtLimits = op.request
    for message in (item.request, item.opening):
        if message is not None:
            runner.book.strays |= _named(message)
    label, extra = f"{item.method}@limits", set(ANSWERS)
    received: list = []  # a Stream's replies as they come, kept when its step then fails
    if item.method == "ModelInfer":
        stub = kpb_grpc.GRPCInferenceServiceStub(runner.channel)
        code, reply = runner.caller.call(label, lambda: stub.ModelInfer(item.request, timeout=TIMEOUT))
    elif item.method == "Generate":
        code, reply = runner.caller.call(label, lambda: _generate(runner.stub, item.request))
        extra.add(C.CANCELLED)
    elif item.method == "Stream":
        code, reply = runner.caller.call(label, lambda: _stream(runner.stub, item, received))
    else:
        code, reply = runner.caller.call(label, lambda: getattr(runner.stub, item.method)(item.request,
                                                                                           timeout=TIMEOUT))
    runner.caller.judge(label, code, reply, extra, repr(op)[:300])
    for answer in reply if isinstance(reply, list) else [reply]:
        session = getattr(answer, "session", None)
        if code == C.OK and getattr(session, "id", ""):
            runner.book.strays.add(session.id)
    for answer in received:  # opened is the session's, whatever the step after it came to
        if answer.HasField("opened") and answer.opened.id:
            runner.book.strays.add(answer.opened.id)


def _stream(stub, item: AtLimits, received: list) -> list:
    """The opening then the step; every reply is appended to ``received`` as it arrives, so a
    session the opening created under a server-chosen id is known even when the step fails."""
    requests = iter([pb.StreamRequest(open=item.opening), pb.StreamRequest(step=item.request)])
    for reply in stub.Stream(requests, timeout=TIMEOUT):
        received.append(reply)
    return received


def _generate(stub, request) -> list:
    call = stub.Generate(request, timeout=TIMEOUT)
    replies = []
    for reply in call:
        replies.append(reply)
        if len(replies) >= GENERATED:
            call.cancel()
            break
    return replies
