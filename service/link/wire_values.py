"""The contract's values (api/values.py, api/options.py, api/errors.py) on the link:
one encode/decode pair each, used by both sides (link/messages.py builds every
message from them). Lists, not maps: no field names on the wire.

A step's top-k, log-probs and token ids travel as raw bytes of a known dtype: the
transport's generic numpy extension costs a Python call and a nested pack per
array (about 4 us each on a 2-core VM), a real share of the engine's one loop at
thousands of steps per second.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Type

import numpy as np

from ..api import errors
from ..api.options import GenerateOptions, SamplingOptions, StepOptions
from ..api.values import Caller, Generated, Kept, Remembrance, Scores, SessionInfo, State, StepResult

_EMPTY = np.empty((0,), np.float32)


# -- token ids -------------------------------------------------------------------------------
def encode_ids(ids: Optional[np.ndarray]) -> Optional[bytes]:
    return None if ids is None else np.ascontiguousarray(ids, np.int64).tobytes()


def decode_ids(raw: Optional[bytes]) -> Optional[np.ndarray]:
    """Read-only int64 ids (a view of the message); None: no ids (no prompt)."""
    return None if raw is None else np.frombuffer(raw, np.int64)


def raw(array: np.ndarray, dtype) -> bytes:
    return np.ascontiguousarray(array, dtype).tobytes()


def rows(data: bytes, dtype, count: int) -> np.ndarray:
    """Bytes from ``raw`` back to a [count, ...] array (read-only: a view of the message)."""
    return np.frombuffer(data, dtype).reshape(count, -1) if count else np.empty((0, 0), dtype)


# -- who calls, and how ----------------------------------------------------------------------
def encode_caller(caller: Caller) -> list:
    return [caller.principal, caller.admin]


def decode_caller(body: list) -> Caller:
    return Caller(body[0], bool(body[1]))


def encode_step_options(o: StepOptions) -> list:
    return [o.top_k, o.all_positions, o.logprobs]


def decode_step_options(body: list) -> StepOptions:
    return StepOptions(int(body[0]), bool(body[1]), bool(body[2]))


def encode_generate_options(o: GenerateOptions) -> list:
    s = o.sampling
    return [o.max_tokens, [s.temperature, s.top_k, s.top_p, s.seed], list(o.stop)]


def decode_generate_options(body: list) -> GenerateOptions:
    max_tokens, (temperature, top_k, top_p, seed), stop = body
    return GenerateOptions(max_tokens, SamplingOptions(temperature, top_k, top_p, seed), tuple(stop))


# -- what comes back ---------------------------------------------------------------------------
def encode_result(result: StepResult) -> list:
    """A StepResult, top-k as raw int64/float32 rows; ``scores.last`` stays in the engine."""
    s, o = result.scores, result.options
    return [result.session_id, result.steps, result.consumed, len(s.top_ids),
            raw(s.top_ids, np.int64), raw(s.top_logprobs, np.float32), raw(s.top_probs, np.float32),
            raw(s.logprobs, np.float32) if o.logprobs else None, encode_step_options(o)]


def decode_result(body: list) -> StepResult:
    session_id, steps, consumed, positions, ids, lps, probs, logprobs, options = body
    scores = Scores(rows(logprobs, np.float32, positions) if logprobs is not None else _EMPTY, _EMPTY,
                    rows(ids, np.int64, positions), rows(lps, np.float32, positions),
                    rows(probs, np.float32, positions))
    return StepResult(session_id, steps, consumed, scores, decode_step_options(options))


def encode_optional_result(result: Optional[StepResult]) -> Optional[list]:
    return None if result is None else encode_result(result)


def decode_optional_result(body: Optional[list]) -> Optional[StepResult]:
    return None if body is None else decode_result(body)


def encode_info(info: SessionInfo) -> list:
    return [info.id, info.steps, info.age_seconds, info.idle_seconds, info.ttl_seconds, info.expires_in_seconds,
            info.busy]


def decode_info(body: list) -> SessionInfo:
    return SessionInfo(*body)


def encode_generated(g: Optional[Generated]) -> Optional[list]:
    """A generated token; None: the generation is over."""
    return None if g is None else [g.token, g.piece, g.text, g.logprob, g.steps, g.finish]


def decode_generated(body: Optional[list]) -> Optional[Generated]:
    return None if body is None else Generated(*body)


def encode_remembrance(r: Optional[Remembrance]) -> Optional[list]:
    """A request id to keep with a commit; None: none."""
    return None if r is None else [r.request_id, r.fingerprint, r.answer]


def decode_remembrance(body: Optional[list]) -> Optional[Remembrance]:
    return None if body is None else Remembrance(body[0], body[1], body[2])


def encode_kept(kept: Optional[Kept]) -> Optional[list]:
    """What the engine kept under a request id; None: nothing."""
    if kept is None:
        return None
    return [kept.answer, None if kept.info is None else encode_info(kept.info),
            [encode_generated(g) for g in kept.tokens], kept.running]


def decode_kept(body: Optional[list]) -> Optional[Kept]:
    if body is None:
        return None
    return Kept(body[0], None if body[1] is None else decode_info(body[1]),
                [Generated(*g) for g in body[2]], bool(body[3]))


def encode_state(state: State) -> list:
    return list(state)  # arrays: the transport's numpy extension (a rare, read-only call)


def decode_state(body: list) -> State:
    return tuple(body)


# -- service errors ----------------------------------------------------------------------------
ERRORS: Dict[str, Type[errors.ServiceError]] = {cls.__name__: cls for cls in (
    errors.ServiceError, errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.SessionBusy,
    errors.FailedPrecondition, errors.ResourceExhausted, errors.Unavailable, errors.CallEnded,
)}


def encode_error(exc: errors.ServiceError) -> list:
    name = type(exc).__name__ if type(exc).__name__ in ERRORS else "ServiceError"
    return [name, exc.message, exc.retry_after_ms, exc.reason, exc.field, exc.metadata]


def decode_error(body: List[Any]) -> errors.ServiceError:
    name, message, retry_after_ms, reason, field, metadata = body
    return ERRORS.get(name, errors.ServiceError)(message, retry_after_ms, reason, field, metadata)
