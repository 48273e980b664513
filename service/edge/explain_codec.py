"""lstm.v1 Explain messages <-> the plain values of service/edge/explain.py."""
from __future__ import annotations

from typing import Optional, Tuple

from .explain import ExplainResult
from ..proto.lstm.v1 import lstm_pb2 as pb


def selection_fields(request: pb.ExplainRequest) -> dict:
    """The request's selection as keyword arguments of Explainer.selection (less n_tokens)."""
    which = request.WhichOneof("units")
    unit_range: Optional[Tuple[int, int]] = None
    if which == "unit_range":
        unit_range = (request.unit_range.start, request.unit_range.end)
    return dict(
        layers=list(request.layers), channels=list(request.channels), unit_range=unit_range,
        top_units=request.top_units if which == "top_units" else None,
        top_k=request.top_k if request.HasField("top_k") else None,
    )


def response(result: ExplainResult, vocab) -> pb.ExplainResponse:
    out = pb.ExplainResponse(session_id=result.session_id, steps=result.steps, committed=result.committed,
                             available_channels=list(result.available_channels))
    pieces, texts = vocab.pieces, vocab.texts
    top_ids, top_lps = result.top_ids.tolist(), result.top_logprobs.tolist()
    probs = (2.718281828459045 ** result.top_logprobs).tolist()
    for t, token in enumerate(result.tokens.tolist()):
        entry = out.tokens.add(token=token, piece=pieces[token], text=texts[token])
        for i, p, lp in zip(top_ids[t], probs[t], top_lps[t]):
            entry.top.add(token=i, prob=p, logprob=lp, piece=pieces[i], text=texts[i])
    for view in result.layers:
        layer = out.layers.add(layer=view.layer)
        layer.mean_forget.extend(view.mean_forget.tolist())
        layer.mean_input.extend(view.mean_input.tolist())
        layer.state_change.extend(view.state_change.tolist())
        for channel in view.channels:
            layer.channels.add(name=channel.name, units=channel.units.tolist(), values=channel.values.ravel().tolist())
    return out
