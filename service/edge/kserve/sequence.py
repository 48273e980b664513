"""Request parameters of the KServe v2 protocol as Triton's sequence batcher reads them.

    sequence_id     uint64 / int64 (> 0) or string: which sequence; absent, 0 or "": none
    sequence_start  bool: start the sequence (create its session, or reset it)
    sequence_end    bool: free the sequence's session after answering
    top_k           int: how many most likely next tokens to return (default 5)
    all_positions   bool: a prediction after every input token, not only the last
    expected_steps  int: a continue's or end's count last seen (response parameter
                    sequence_steps): the session is rewound there first (a resend applies once)

A sequence id names an lstm.v1 session, deterministically, so the same id
always reaches the same state and lstm.v1 clients can inspect it:

    integer n  ->  "kserve-seq-int-" + n as 20 decimal digits      kserve-seq-int-00000000000000000042
    string s   ->  "kserve-seq-str-" + base64url(UTF-8 of s), no '=' padding

Both fit the session id rules (service/core/session_ids.py: 16-128 characters
from [A-Za-z0-9_-], no dot); a string id may be 1 to 84 UTF-8 bytes.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Optional

from ...api.errors import InvalidArgument

INT_PREFIX = "kserve-seq-int-"
STR_PREFIX = "kserve-seq-str-"
MAX_STRING_ID_BYTES = 84  # base64url of 84 bytes is 112 characters; + 15 of prefix = 127 <= 128
UINT64_MAX = (1 << 64) - 1
CONTROL_KEYS = ("sequence_id", "sequence_start", "sequence_end")


@dataclass(frozen=True)
class Sequence:
    """Where a request's tokens go: ``session_id`` "" means stateless (no sequence)."""

    session_id: str
    start: bool
    end: bool
    label: str  # the sequence id as the client gave it, for messages


STATELESS = Sequence("", False, False, "")


def session_id_for(sequence_id) -> str:
    """The lstm.v1 session id that a sequence id maps to (see the module docstring)."""
    if isinstance(sequence_id, int):
        if not 1 <= sequence_id <= UINT64_MAX:
            raise InvalidArgument(f"sequence_id {sequence_id} is out of range: allowed 1 to {UINT64_MAX} (0: none)")
        return f"{INT_PREFIX}{sequence_id:020d}"
    raw = sequence_id.encode("utf-8")
    if not 1 <= len(raw) <= MAX_STRING_ID_BYTES:
        raise InvalidArgument(
            f"string sequence_id is {len(raw)} UTF-8 bytes; allowed 1 to {MAX_STRING_ID_BYTES}"
        )
    return STR_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _bool(parameters, key: str) -> bool:
    if key not in parameters:
        return False
    p = parameters[key]
    if p.WhichOneof("parameter_choice") != "bool_param":
        raise InvalidArgument(f"parameter {key} must be a bool_param, got {p.WhichOneof('parameter_choice')}")
    return p.bool_param


def _sequence_id(parameters):
    """int, str or None (no sequence) from the sequence_id parameter."""
    if "sequence_id" not in parameters:
        return None
    p = parameters["sequence_id"]
    kind = p.WhichOneof("parameter_choice")
    if kind in ("uint64_param", "int64_param"):
        value = getattr(p, kind)
        if value < 0:
            raise InvalidArgument(f"sequence_id {value} is negative: allowed 1 to {UINT64_MAX} (0: none)")
        return value or None
    if kind == "string_param":
        return p.string_param or None
    raise InvalidArgument(f"parameter sequence_id must be uint64_param, int64_param or string_param, got {kind}")


def sequence_of(parameters) -> Sequence:
    """The request's sequence controls; INVALID_ARGUMENT when they make no sense."""
    if not parameters:
        return STATELESS
    sequence_id = _sequence_id(parameters)
    start, end = _bool(parameters, "sequence_start"), _bool(parameters, "sequence_end")
    if sequence_id is None:
        if start or end:
            raise InvalidArgument(
                "sequence_start/sequence_end need a sequence_id (a uint64 above 0 or a non-empty string)")
        return STATELESS
    return Sequence(session_id_for(sequence_id), start, end, repr(sequence_id))


def int_parameter(parameters, key: str) -> Optional[int]:
    if key not in parameters:
        return None
    p = parameters[key]
    kind = p.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidArgument(f"parameter {key} must be an int64_param, got {kind}")
    return getattr(p, kind)


def bool_parameter(parameters, key: str) -> bool:
    return _bool(parameters, key)
