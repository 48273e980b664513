"""Plain results -> lstm.v1 protobuf messages (the encoding half of the edge)."""
from __future__ import annotations

import math

from ..proto.lstm.v1 import lstm_pb2 as pb
from ..api.values import Generated, SessionInfo, StepResult

FINISH = {None: pb.FINISH_REASON_UNSPECIFIED, "length": pb.FINISH_REASON_LENGTH, "stop": pb.FINISH_REASON_STOP}


def step_result(target: pb.StepResult, result: StepResult, vocab, tag: str = "") -> pb.StepResult:
    """Fill ``target`` (a field of the response, so nothing is copied afterwards) from ``result``."""
    out = result.scores
    ids = out.top_ids.tolist()
    lps = out.top_logprobs.tolist()
    probs = out.top_probs.tolist()  # exp computed once per batch by the batcher
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


def session(s: SessionInfo, model: str) -> pb.Session:
    return pb.Session(
        id=s.id,
        model=model,
        steps=s.steps,
        age_seconds=s.age_seconds,
        idle_seconds=s.idle_seconds,
        ttl_seconds=int(round(s.ttl_seconds)),
        expires_in_seconds=s.expires_in_seconds,
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
