"""One KServe v2 inference request, decoded and run through the engine's public
methods (no gRPC here; the servicer maps errors and writes the reply).

Sequence semantics, as Triton's sequence batcher:
    start         the sequence's session is created (or, if it exists, reset) with these tokens
    neither       the tokens continue the sequence; an unknown sequence is NOT_FOUND
    end           the session is freed after this step's answer was computed
    start + end   a one-request sequence: scored from the zero state, and a live
                  session of that id is freed
    no sequence   a stateless step from the zero state; nothing is committed
A request that fails leaves the sequence as it was (a failed start creates nothing),
and a step is committed only while the call is live (not cancelled, not past
its deadline). Reconciling a request whose outcome is in doubt (DEADLINE_EXCEEDED,
a lost reply; docs/errors.md): every answer of a sequence carries the session's count
(response parameter ``sequence_steps``); a continue or end resent with parameter
``expected_steps`` = the count last seen is rewound there first (the session's journal),
so it applies exactly once; a start resent runs from the zero state again (the same
outcome); an end that did apply leaves SEQUENCE_NOT_FOUND with metadata ``ended`` =
``sequence_end``, and a start + end changes nothing that a resend would change again.
Sequence ids are per principal, as session ids are (service/core/session_ids.py):
Alice's sequence 42 and Bob's sequence 42 are two sessions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from typing import Sequence as Seq

import numpy as np

from ...api.errors import AlreadyExists, InvalidArgument, NotFound
from ...api.engine import EngineApi
from ...api.options import StepOptions
from ...api.values import ANYONE, Caller, Live, StepResult, always
from . import sequence as sq
from . import tensors
from .held import HeldSequences

ENDED = "was ended by its KServe sequence (sequence_end)"


@dataclass(frozen=True)
class Request:
    ids: np.ndarray  # [T] validated token ids
    options: StepOptions
    sequence: sq.Sequence
    outputs: Seq[str]
    expected_steps: Optional[int] = None  # a continue's or end's count the client last saw (a resend)


def decode(engine: EngineApi, request, seq: Optional[sq.Sequence] = None) -> Request:
    """Validate everything before anything runs (INVALID_ARGUMENT with a message); ``seq``: the
    request's sequence controls when the caller has read them already (a stream, to order its requests)."""
    p = request.parameters
    seq = sq.sequence_of(p) if seq is None else seq
    outputs = tensors.requested_outputs(request)
    ids, text = tensors.request_input(request)
    tokens = engine.tokens(ids if ids is not None else (), text, tensors.INPUT_IDS if ids is not None else tensors.TEXT)
    options = engine.step_options(sq.int_parameter(p, "top_k"), sq.bool_parameter(p, "all_positions"),
                                  tensors.LOGPROBS in outputs)
    expected = sq.int_parameter(p, "expected_steps")
    if expected is not None and (not seq.session_id or seq.start or expected < 0):
        raise InvalidArgument(
            f"parameter expected_steps ({expected}) is the count a continue or end of a sequence last saw "
            "(>= 0); a stateless step or a sequence_start has none", field="parameters.expected_steps")
    return Request(tokens, options, seq, outputs, expected)


async def run(engine: EngineApi, r: Request, live: Live = always, caller: Caller = ANYONE,
              held: Optional[HeldSequences] = None) -> StepResult:
    """The step's StepResult, with the sequence's session created, continued or freed. ``held``:
    a stream's holds (edge/kserve/held.py), which its continues and ends step under."""
    seq = r.sequence
    if not seq.session_id:
        return await engine.predict("", r.ids, r.options, live=live, caller=caller)
    if held is not None:
        if not seq.start:
            return await _held_step(held, r, live)
        held.drop(seq.session_id)  # a start creates or resets the session with calls of its own
    if seq.start and seq.end:
        result = await engine.predict("", r.ids, r.options, live=live, caller=caller)
        try:
            await engine.delete_session(seq.session_id, live, caller)
        except NotFound:
            pass  # the usual case: no earlier sequence of that id
        return result
    if seq.start:
        try:
            return _prompted(await engine.create(seq.session_id, 0, r.ids, r.options, live, caller))
        except AlreadyExists:  # a live sequence of this caller's restarted: reset it with these tokens
            pass
        try:
            return await _continue(engine, r, True, live, caller)
        except NotFound:  # it ended between the two (expired, deleted): begin it afresh
            return _prompted(await engine.create(seq.session_id, 0, r.ids, r.options, live, caller))
    return await _continue(engine, r, False, live, caller)


def _not_active(seq: sq.Sequence, exc: NotFound) -> NotFound:
    metadata = {"session_id": seq.session_id}
    if ENDED in exc.message:  # a resent end that did apply learns it did
        metadata["ended"] = "sequence_end"
    return NotFound(
        f"sequence {seq.label} is not active ({exc.message}); begin it with sequence_start=true",
        reason="SEQUENCE_NOT_FOUND", field="parameters.sequence_id", metadata=metadata,
    )


async def _continue(engine: EngineApi, r: Request, start: bool, live: Live, caller: Caller) -> StepResult:
    seq = r.sequence
    if not start and not seq.end:
        # The common step (neither start nor end) is a Predict on the sequence's session: hold, run,
        # commit and release in one engine call and one commit message (with --fronts: one round
        # trip to the engine and one frame after it, as an lstm.v1 stream step, where a hold, a step
        # and a release of their own cost two round trips and four frames).
        try:
            return await engine.predict(seq.session_id, r.ids, r.options, expected_steps=r.expected_steps,
                                        live=live, caller=caller)
        except NotFound as exc:
            raise _not_active(seq, exc) from None
    try:
        hold = await engine.hold(seq.session_id, caller)
    except NotFound as exc:
        if start:
            raise
        raise _not_active(seq, exc) from None
    try:
        result = await hold.step(r.ids, r.options, start, None if start else r.expected_steps, live=live)
        if seq.end:
            hold.end_session(ENDED)
        return result
    finally:
        hold.release()


async def _held_step(held: HeldSequences, r: Request, live: Live) -> StepResult:
    """A continue or end under the stream's hold on the sequence: kept for its next step after
    a continue, released after an end or a failure."""
    seq = r.sequence
    kept = False
    try:
        hold = await held.take(seq.session_id)
        result = await hold.step(r.ids, r.options, False, r.expected_steps, live=live)
        if seq.end:
            hold.end_session(ENDED)
        kept = not seq.end
        return result
    except NotFound as exc:
        raise _not_active(seq, exc) from None
    finally:
        if kept:
            held.done(seq.session_id)
        else:
            held.drop(seq.session_id)


def _prompted(created) -> StepResult:
    """The prompt's result of a create that had one (a KServe step always has its tokens)."""
    result = created[1]
    assert result is not None
    return result
