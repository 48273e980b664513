"""KServe v2 tensors <-> plain values: the request's one input, the response's outputs.

Inputs (send exactly one):
    INPUT_IDS  INT64 [1, T]  token ids
    TEXT       BYTES [1]     one UTF-8 string (byte-level models: its bytes are the tokens)
Outputs (as ModelMetadata declares; P = T with all_positions, else 1; K = top_k):
    TOP_IDS    INT64 [1, P, K]  most likely next tokens, most likely first   (default)
    TOP_PROBS  FP32  [1, P, K]  their probabilities                           (default)
    LOGPROBS   FP32  [1, P, V]  log-probabilities of every token              (only when requested)

Data may come as ``raw_input_contents`` (little-endian; BYTES elements each
prefixed by a 4-byte little-endian length, as Triton does) or as typed
``contents``; outputs always go out as ``raw_output_contents``, which
tritonclient and perf_analyzer read.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ...api.errors import InvalidArgument, summary

INPUT_IDS, TEXT = "INPUT_IDS", "TEXT"
TOP_IDS, TOP_PROBS, LOGPROBS = "TOP_IDS", "TOP_PROBS", "LOGPROBS"
INPUTS = {INPUT_IDS: ("INT64", "[1, T]"), TEXT: ("BYTES", "[1]")}
OUTPUTS = {TOP_IDS: ("INT64", "<i8"), TOP_PROBS: ("FP32", "<f4"), LOGPROBS: ("FP32", "<f4")}
DEFAULT_OUTPUTS = (TOP_IDS, TOP_PROBS)
ALLOWED_INPUTS = f"{INPUT_IDS} (INT64 [1, T]) or {TEXT} (BYTES [1])"


def request_input(request) -> Tuple[Optional[np.ndarray], str]:
    """(token ids [T], "") or (None, text) from the request's single input."""
    raw = request.raw_input_contents
    names = [t.name for t in request.inputs]
    if len(names) != 1:
        raise InvalidArgument(f"send exactly one input, {ALLOWED_INPUTS}; got {summary(names) if names else 'none'}",
                              field="inputs")
    if raw and len(raw) != 1:
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for 1 input; send one per input", field="raw_input_contents"
        )
    tensor, data = request.inputs[0], (raw[0] if raw else None)
    if tensor.name == INPUT_IDS:
        return _ids(tensor, data), ""
    if tensor.name == TEXT:
        return None, _text(tensor, data)
    raise InvalidArgument(f"unknown input {tensor.name[:40]!r}: this model takes {ALLOWED_INPUTS}",
                          field="inputs[0].name")


def _check_type(tensor, datatype: str) -> None:
    if tensor.datatype != datatype:
        raise InvalidArgument(
            f"input {tensor.name} has datatype {tensor.datatype[:20]!r}; it must be {datatype}",
            field="inputs[0].datatype",
        )


def _ids(tensor, data: Optional[bytes]) -> np.ndarray:
    _check_type(tensor, "INT64")
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise InvalidArgument(
            f"input {INPUT_IDS} has shape {shape[:8]}; it must be [1, T] with T >= 1 tokens", field="inputs[0].shape"
        )
    count = shape[1]
    typed = tensor.contents.int64_contents if tensor.HasField("contents") else ()
    if data is not None:
        if len(typed):
            raise InvalidArgument(f"input {INPUT_IDS}: give raw_input_contents or contents, not both",
                                  field="inputs[0]")
        if len(data) != 8 * count:
            raise InvalidArgument(
                f"input {INPUT_IDS}: raw_input_contents has {len(data)} bytes; shape [1, {count}] of INT64 "
                f"needs {8 * count}", field="raw_input_contents",
            )
        return np.frombuffer(data, dtype="<i8").astype(np.int64, copy=False)
    if len(typed) != count:
        raise InvalidArgument(
            f"input {INPUT_IDS}: {len(typed)} values in contents.int64_contents for shape [1, {count}]",
            field="inputs[0].contents",
        )
    return np.fromiter(typed, dtype=np.int64, count=count)


def _text(tensor, data: Optional[bytes]) -> str:
    _check_type(tensor, "BYTES")
    shape = list(tensor.shape)
    if int(np.prod(shape, dtype=np.int64)) != 1 or len(shape) > 2:
        raise InvalidArgument(f"input {TEXT} has shape {shape[:8]}; it must be [1] (one string)",
                              field="inputs[0].shape")
    typed: Sequence[bytes] = tensor.contents.bytes_contents if tensor.HasField("contents") else []
    if data is not None:
        if len(typed):
            raise InvalidArgument(f"input {TEXT}: give raw_input_contents or contents, not both", field="inputs[0]")
        size = int.from_bytes(data[:4], "little") if len(data) >= 4 else -1
        if size != len(data) - 4:
            raise InvalidArgument(
                f"input {TEXT}: raw_input_contents must be one element, a 4-byte little-endian length and that "
                f"many bytes; got {len(data)} bytes", field="raw_input_contents",
            )
        value = data[4:]
    elif len(typed) == 1:
        value = typed[0]
    else:
        raise InvalidArgument(f"input {TEXT}: {len(typed)} values in contents.bytes_contents; send one string",
                              field="inputs[0].contents")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"input {TEXT} is not valid UTF-8 (byte {exc.start})", field="inputs[0]") from None


def requested_outputs(request) -> Sequence[str]:
    """The outputs to send: those asked for, else the defaults (LOGPROBS only on request)."""
    if not request.outputs:
        return DEFAULT_OUTPUTS
    names = [o.name for o in request.outputs]
    for name in names:
        if name not in OUTPUTS:
            raise InvalidArgument(f"unknown output {name[:40]!r}: allowed {', '.join(OUTPUTS)}", field="outputs")
    return names


def write_outputs(response, scores, names: Sequence[str]) -> None:
    """Append the named outputs of a step's ``scores`` to ``response`` as raw contents."""
    arrays = {TOP_IDS: scores.top_ids, TOP_PROBS: scores.top_probs, LOGPROBS: scores.logprobs}
    for name in names:
        datatype, dtype = OUTPUTS[name]
        array = np.ascontiguousarray(arrays[name], dtype=dtype)
        response.outputs.add(name=name, datatype=datatype, shape=(1, *array.shape))
        response.raw_output_contents.append(array.tobytes())
