"""Plain results -> lstm.v1 protobuf messages (the encoding half of the edge)."""
from __future__ import annotations

import math
import struct

import numpy as np

from .engine import Generated, StepResult
from .proto.lstm.v1 import lstm_pb2 as pb
from .sessions import Session

FINISH = {None: pb.FINISH_REASON_UNSPECIFIED, "length": pb.FINISH_REASON_LENGTH, "stop": pb.FINISH_REASON_STOP}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_BYTE = [bytes((i,)) for i in range(256)]
_PROB_LOGPROB = struct.Struct("<BfBf").pack  # Candidate.prob (field 2, fixed32), Candidate.logprob (field 3, fixed32)
_PROB_TAG, _LOGPROB_TAG = 0x15, 0x1D
_TOP_TAG, _PREDICTION_TAG, _LOGPROBS_TAG, _POSITION_TAG = b"\x12", b"\x22", b"\x1a", b"\x08"


def _candidate_heads(vocab) -> list:
    """Per token: the encoded start of its ``Prediction.top`` entry (tag, length, and the
    Candidate's token, piece and text fields); the 10 bytes of prob and logprob follow."""
    heads = getattr(vocab, "_candidate_heads", None)
    if heads is None:
        heads = []
        for t in range(vocab.size):
            fixed = pb.Candidate(token=t, piece=vocab.pieces[t], text=vocab.texts[t]).SerializeToString()
            heads.append(_TOP_TAG + _varint(len(fixed) + 10) + fixed)
        vocab._candidate_heads = heads
    return heads


def step_result(target: pb.StepResult, result: StepResult, vocab, tag: str = "") -> pb.StepResult:
    """Fill ``target`` (a field of the response, so nothing is copied afterwards) from ``result``.

    The predictions are written as protobuf wire bytes and merged in with one
    ``MergeFromString``: per token the Candidate's fixed part (token, piece,
    text) is encoded once (``_candidate_heads``), and prob/logprob are the
    float32 values themselves, so the message equals one built field by field
    (tests/service/test_codec.py checks that) at a fraction of the cost.
    """
    out = result.output
    target.session_id = result.session_id
    target.steps = result.steps
    target.consumed = result.consumed
    if tag:
        target.tag = tag
    heads = _candidate_heads(vocab)
    ids = out.top_ids.tolist()
    lps = out.top_logprobs.tolist()
    probs = out.top_probs.tolist()
    position = result.first_position
    logprobs = out.logprobs if result.options.logprobs else None
    parts = []
    for row in range(len(ids)):
        body = [_POSITION_TAG + _varint(position + row)] if position + row else []
        for t, p, lp in zip(ids[row], probs[row], lps[row]):
            body.append(heads[t])
            body.append(_PROB_LOGPROB(_PROB_TAG, p, _LOGPROB_TAG, lp))
        if logprobs is not None and logprobs.shape[1]:
            raw = logprobs[row].astype("<f4", copy=False).tobytes()
            body.append(_LOGPROBS_TAG + _varint(len(raw)) + raw)
        encoded = b"".join(body)
        parts.append(_PREDICTION_TAG + _varint(len(encoded)) + encoded)
    target.MergeFromString(b"".join(parts))
    return target


def step_result_fields(target: pb.StepResult, result: StepResult, vocab, tag: str = "") -> pb.StepResult:
    """``step_result`` built field by field: the reference the tests compare it with."""
    out = result.output
    ids = out.top_ids.tolist()
    lps = out.top_logprobs.tolist()
    probs = np.exp(out.top_logprobs).tolist()
    pieces, texts = vocab.pieces, vocab.texts
    first = result.first_position
    target.session_id = result.session_id
    target.steps = result.steps
    target.consumed = result.consumed
    if tag:
        target.tag = tag
    for row in range(len(ids)):
        prediction = target.predictions.add(position=first + row)
        add = prediction.top.add
        for t, p, lp in zip(ids[row], probs[row], lps[row]):
            add(token=t, prob=p, logprob=lp, piece=pieces[t], text=texts[t])
        if result.options.logprobs:
            prediction.logprobs.extend(out.logprobs[row].tolist())
    return target


def session(s: Session, now: float, model: str) -> pb.Session:
    return pb.Session(
        id=s.id,
        model=model,
        steps=s.steps,
        age_seconds=max(0.0, now - s.created),
        idle_seconds=0.0 if s.busy else max(0.0, now - s.last_used),
        ttl_seconds=int(round(s.ttl)),
        expires_in_seconds=max(0.0, s.expires_in(now)),
        busy=s.busy,
    )


def generated(g: Generated, session_id: str) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        token=g.token,
        piece=g.piece,
        text=g.text,
        logprob=g.logprob,
        steps=g.steps,
        finish_reason=FINISH[g.finish],
        session_id=session_id,
    )


def model(card, runtime, config) -> pb.Model:
    info = card.precisions.get(runtime.precision, {})
    loss = info.get("validation_loss")
    return pb.Model(
        name=card.name,
        cell=card.cell,
        has_cell_state=card.has_cell_state,
        vocab_kind=card.vocab_kind,
        vocab_size=card.vocab_size,
        embed_size=card.embed_size,
        hidden_size=card.hidden_size,
        layers=card.layers,
        precision=runtime.precision,
        precisions=sorted(card.precisions),
        providers=runtime.providers,
        validation_loss=float(loss) if loss is not None else math.nan,
        sha256=str(info.get("sha256", "")),
        max_tokens_per_message=config.max_tokens_per_message,
        max_generate_tokens=config.max_generate_tokens,
    )
