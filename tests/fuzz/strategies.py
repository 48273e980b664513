"""Hypothesis strategies: field values (hostile ones included), every
lstm.v1 request message, and the operations a fuzz case is made of.

Session ids inside operations are *references*, resolved when the case
runs: ``Slot(i)`` is the i-th fuzzed session of the case (or a fresh unknown
id when the slot is empty), ``Raw(text)`` is sent as it is. Expensive values
(4096-token inputs, 1 MiB ids, long generations) are drawn rarely so a
50,000-case run stays within minutes on a small model.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Optional, Tuple

from google.protobuf import text_format
from hypothesis import strategies as st

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

from .limits import limit_requests

SLOTS = 2  # fuzzed sessions per case (each with its twin)
UINT32, UINT64 = 2**32 - 1, 2**64 - 1
METHODS = ("Predict", "Generate", "CreateSession", "GetSession", "ResetSession", "DeleteSession",
           "ForkSession", "ListSessions", "ListModels", "GetModel", "Stream", "NoSuchMethod")


@dataclass(frozen=True)
class Slot:
    index: int


@dataclass(frozen=True)
class Raw:
    text: str

    def __repr__(self) -> str:  # a 1 MiB id would drown the report
        return f"Raw({self.text[:24]!r}{'...' if len(self.text) > 24 else ''} len={len(self.text)})"


@dataclass(frozen=True)
class Call:
    """How a call is made: deadline (seconds) and an x-session-id header (a reference or text)."""

    timeout: Optional[float] = None
    header: Optional[object] = None


@dataclass(frozen=True)
class Op:
    kind: str  # predict | stream | generate | create | get | reset | delete | fork | list | models | raw | limits
    session: object = None  # Slot | Raw | None
    request: object = None  # the protobuf request (session ids filled in when run)
    call: Call = field(default_factory=Call)
    extra: Tuple = ()  # per kind: stream steps, cancel point, raw method, ...

    def __repr__(self) -> str:  # one line per operation in hypothesis' reports
        return (f"Op({self.kind}, {self.session!r}, {_short(self.request)}, timeout={self.call.timeout}, "
                f"header={self.call.header!r}, extra={_short(self.extra)})")


def _short(value, limit: int = 300) -> str:
    if isinstance(value, tuple):
        text = "(" + ", ".join(_short(v, limit) for v in value) + ")"
    elif hasattr(value, "DESCRIPTOR"):
        text = "{" + text_format.MessageToString(value, as_one_line=True) + "}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def has_field(message_class, name: str) -> bool:
    return name in message_class.DESCRIPTOR.fields_by_name


# -- field values ----------------------------------------------------------------
def _url_safe(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Ids from random bytes (one draw each, where a character-wise text draw costs one per character).
VALID_ID = st.builds(lambda route, suffix: _url_safe(route) + ("." + _url_safe(suffix) if suffix else ""),
                     st.binary(min_size=12, max_size=30), st.binary(max_size=4))
HOSTILE_ID = st.one_of(
    st.just(""),
    st.text(max_size=40),  # unicode, control characters, too short
    st.tuples(st.integers(120, 300), st.integers(0, 3)).map(  # around and past the 128 limit, odd dots
        lambda t: ("k" * (t[0] - t[1]) + "." * t[1])[: t[0]]),
    st.just(1048576).map(lambda n: "k" * n),  # (built lazily: a 1 MiB literal would bloat every report)
    st.sampled_from(["L" * 120 + ".tail", "é" * 20, "a" * 129, "x" * 15, "a.b.c" * 4, "\x00" * 20]),
    VALID_ID,  # well-formed but unknown
)
SESSION_REF = st.one_of(st.integers(0, SLOTS - 1).map(Slot), st.integers(0, SLOTS - 1).map(Slot),
                        st.integers(0, SLOTS - 1).map(Slot), HOSTILE_ID.map(Raw))


def mostly(draw, valid, hostile, odds: int = 6):
    """Draw from ``hostile`` about once in ``odds`` draws, else from ``valid``:
    enough bad values to probe every check, enough good ones to reach the state."""
    return draw(hostile if draw(st.sampled_from([False] * (odds - 1) + [True])) else valid)


SMALL_TOKENS = st.lists(st.integers(0, 255), min_size=1, max_size=8)
HOSTILE_TOKENS = st.one_of(
    st.lists(st.integers(-2**31, 2**31 - 1), max_size=6),  # out of the vocabulary
    st.integers(0, 600).map(lambda n: [65] * n),
    st.sampled_from([[], [101] * 4096, [1] * 4097, [256], [-1]]),
)
TEXT = st.text(min_size=1, max_size=12)
HOSTILE_TEXT = st.one_of(st.just(""), st.sampled_from(["x" * 4097, "\ud7ff\U0010ffff", "\x00"]))


@st.composite
def inputs(draw) -> pb.Input:
    kind = mostly(draw, st.sampled_from(["tokens", "text"]), st.sampled_from(["both", "empty"]), odds=10)
    message = pb.Input()
    if kind in ("tokens", "both"):
        message.tokens.extend(mostly(draw, SMALL_TOKENS, HOSTILE_TOKENS))
    if kind in ("text", "both"):
        message.text = mostly(draw, TEXT, HOSTILE_TEXT)
    return message


@st.composite
def output_options(draw) -> Optional[pb.OutputOptions]:
    if draw(st.integers(0, 3)) == 0:
        return None
    top_k = mostly(draw, st.one_of(st.none(), st.integers(0, 8)), st.sampled_from([256, 257, UINT32]))
    message = pb.OutputOptions(all_positions=draw(st.booleans()), logprobs=draw(st.booleans()))
    if top_k is not None:
        message.top_k = top_k
    return message


FLOAT = st.floats(0, 2, width=32)
HOSTILE_FLOAT = st.one_of(st.floats(width=32), st.sampled_from([0.0, 10.0, 10.5, -0.0, 1e-45]))
STOPS = st.lists(st.text(min_size=1, max_size=3), max_size=2)
HOSTILE_STOPS = st.lists(st.sampled_from(["", "e", " ", "x" * 257]), max_size=17)


@st.composite
def sampling(draw, long: bool = False) -> pb.SamplingParams:
    lengths = st.sampled_from([0, 1, 2, 3, 5, 8] + ([4096] * 4 if long else []))
    message = pb.SamplingParams(max_tokens=mostly(draw, lengths, st.sampled_from([4097, UINT32]), odds=12),
                                top_k=mostly(draw, st.sampled_from([0, 1, 5, 256]), st.just(257), odds=12))
    if draw(st.booleans()):
        message.temperature = mostly(draw, FLOAT, HOSTILE_FLOAT, odds=12)
    if draw(st.booleans()):
        message.top_p = mostly(draw, st.floats(0, 1, exclude_min=True, width=32), HOSTILE_FLOAT, odds=12)
    if draw(st.integers(0, 3)):  # mostly seeded, so a twin can replay it
        message.seed = draw(st.one_of(st.integers(0, 10), st.just(UINT64)))
    message.stop.extend(mostly(draw, STOPS, HOSTILE_STOPS, odds=12))
    return message


RIGHT_COUNT = 1  # an expected_steps of 1 drawn for a fuzzed session is replaced by its true count


def _expected_steps(draw, message) -> None:
    if has_field(type(message), "expected_steps") and draw(st.integers(0, 3)) == 0:
        message.expected_steps = draw(st.sampled_from([RIGHT_COUNT, RIGHT_COUNT, 0, 3, UINT64]))


@st.composite
def predict_requests(draw) -> pb.PredictRequest:
    message = pb.PredictRequest(input=draw(inputs()), start=draw(st.integers(0, 7)) == 0)
    options = draw(output_options())
    if options is not None:
        message.output.CopyFrom(options)
    _expected_steps(draw, message)
    return message


@st.composite
def stream_steps(draw) -> pb.StreamStep:
    step = pb.StreamStep(input=draw(inputs()), start=draw(st.integers(0, 6)) == 0, end=draw(st.integers(0, 8)) == 0,
                         tag=draw(st.sampled_from(["", "t", "é" * 3])))
    options = draw(output_options())
    if options is not None:
        step.output.CopyFrom(options)
    _expected_steps(draw, step)
    return step


@st.composite
def open_streams(draw) -> pb.OpenStream:
    message = pb.OpenStream(create=draw(st.booleans()), ttl_seconds=draw(st.sampled_from([0, 0, 60, 86401, UINT32])))
    if draw(st.booleans()):
        message.end_with_stream = draw(st.booleans())
    options = draw(output_options())
    if options is not None:
        message.output.CopyFrom(options)
    return message


@st.composite
def generate_requests(draw, long: bool = False) -> pb.GenerateRequest:
    message = pb.GenerateRequest(sampling=draw(sampling(long)))
    if draw(st.integers(0, 2)):
        message.prompt.CopyFrom(draw(inputs()))
    _expected_steps(draw, message)
    return message


@st.composite
def create_requests(draw) -> pb.CreateSessionRequest:
    message = pb.CreateSessionRequest(ttl_seconds=draw(st.sampled_from([0, 0, 0, 60, 86401, UINT32])))
    if draw(st.booleans()):
        message.prompt.CopyFrom(draw(inputs()))
    options = draw(output_options())
    if options is not None:
        message.output.CopyFrom(options)
    return message


FORK_REQUESTS = st.builds(pb.ForkSessionRequest, ttl_seconds=st.sampled_from([0, 0, 60, 86401]))
LIST_REQUESTS = st.builds(pb.ListSessionsRequest, limit=st.sampled_from([0, 1, 2, 1000, 1001, UINT32]))
MODEL_REQUESTS = st.builds(pb.GetModelRequest, name=st.one_of(st.just(""), st.just("tiny-lstm"), HOSTILE_ID))


# -- operations and cases ----------------------------------------------------------
TIMEOUT = st.one_of(st.none(), st.none(), st.none(), st.none(), st.none(), st.none(), st.floats(0.0001, 0.005))
HEADER = st.one_of(*[st.none()] * 8, st.just("same"), st.just("same"), st.integers(0, SLOTS - 1).map(Slot),
                   VALID_ID.map(Raw))
CALLS = st.builds(Call, timeout=TIMEOUT, header=HEADER)
PLAIN_CALLS = st.builds(Call, header=HEADER)  # no deadline
STATELESS = st.just(Raw(""))


@st.composite
def generate_ops(draw) -> Op:
    cancel_after = draw(st.one_of(st.none(), st.none(), st.integers(0, 3)))
    request = draw(generate_requests(long=cancel_after is not None))
    return Op("generate", draw(st.one_of(SESSION_REF, STATELESS)), request, draw(CALLS), (cancel_after,))


@st.composite
def stream_ops(draw) -> Op:
    steps = draw(st.lists(stream_steps(), min_size=0, max_size=3))
    cancel_after = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, len(steps))))
    call = draw(CALLS)
    return Op("stream", draw(SESSION_REF), draw(open_streams()), call, (tuple(steps), cancel_after))


NO_EXTRA = st.just(())


def _op(kind, session, request, call=PLAIN_CALLS, extra=NO_EXTRA):
    return st.builds(Op, st.just(kind), session, request, call, extra)


FORK_TARGET = st.one_of(st.just("slot"), st.just("slot"), st.just(""), HOSTILE_ID)
RAW_PAYLOAD = st.one_of(st.binary(max_size=24), st.sampled_from([b"\x0a\x02\xff\xfe", b"\xff\xff", b"\x08" * 9]))

OPERATIONS = st.one_of(
    _op("predict", st.one_of(SESSION_REF, STATELESS), predict_requests(), CALLS),
    _op("predict", st.integers(0, SLOTS - 1).map(Slot), predict_requests(), CALLS),
    stream_ops(),
    generate_ops(),
    # Record ops with deadlines too: each carries a request id, and one that ends DEADLINE_EXCEEDED
    # is resent with it (ops.py _by_id): exactly one effect, whatever the first attempt did.
    _op("create", st.one_of(st.integers(0, SLOTS - 1).map(Slot), HOSTILE_ID.map(Raw)), create_requests(), CALLS),
    _op("get", SESSION_REF, st.just(pb.GetSessionRequest())),
    _op("reset", SESSION_REF, st.just(pb.ResetSessionRequest()), CALLS),
    _op("delete", SESSION_REF, st.just(pb.DeleteSessionRequest()), CALLS),
    _op("fork", SESSION_REF, FORK_REQUESTS, CALLS, extra=st.tuples(FORK_TARGET)),
    _op("import", st.integers(0, SLOTS - 1).map(Slot), st.just(pb.ImportSessionRequest()), CALLS),
    _op("list", st.none(), LIST_REQUESTS),
    _op("models", st.none(), st.one_of(st.just(pb.ListModelsRequest()), MODEL_REQUESTS)),
    _op("raw", st.none(), st.none(), extra=st.tuples(st.sampled_from(METHODS), RAW_PAYLOAD)),
    # The safe retry: a step with the right expected_steps and a tiny deadline, resent after a
    # DEADLINE_EXCEEDED with the same expected_steps, applies exactly once.
    _op("retry", st.integers(0, SLOTS - 1).map(Slot), st.builds(pb.Input, tokens=SMALL_TOKENS),
        st.builds(Call, timeout=st.floats(0.0001, 0.004))),
    # While a stream holds S: another writer (or reset/delete/a second stream) must get ABORTED.
    _op("busy", st.integers(0, SLOTS - 1).map(Slot), st.sampled_from(["predict", "generate", "reset", "delete",
                                                                     "stream"])),
    # Every string and repeated field of every request at, past and far past its limits (limits.py):
    # each answer's message and details trailer must stay within the bounds (calls.Stats.oversize).
    _op("limits", st.none(), limit_requests()),
)


@dataclass(frozen=True)
class Case:
    prompts: Tuple[Optional[pb.Input], ...]  # how each slot starts (None: created empty)

    def __repr__(self) -> str:
        return "Case(prompts=" + _short(self.prompts) + ", ops=[\n  " + ",\n  ".join(map(repr, self.ops)) + "])"
    ops: Tuple[Op, ...]


START_PROMPTS = st.one_of(st.none(), st.builds(pb.Input, tokens=SMALL_TOKENS), st.builds(pb.Input, text=TEXT))
CASES = st.builds(Case, st.lists(START_PROMPTS, min_size=1, max_size=2).map(tuple),
                  st.lists(OPERATIONS, min_size=1, max_size=6).map(tuple))
