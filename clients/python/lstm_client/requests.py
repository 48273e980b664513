"""Request messages built from plain Python arguments (no I/O here)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from .proto.lstm.v1 import lstm_pb2 as pb

SESSION_HEADER = "x-session-id"
Metadata = Tuple[Tuple[str, str], ...]


def session_metadata(session_id: str) -> Metadata:
    """The routing header a session-affine proxy hashes (sent on every call that names a session)."""
    return ((SESSION_HEADER, session_id),) if session_id else ()


def make_input(text: Optional[str] = None, tokens: Optional[Sequence[int]] = None) -> pb.Input:
    """An Input holds text or tokens, never both. proto3 cannot make a repeated field part of a
    oneof (and a wrapper would change the wire format), so the client refuses both here, before
    sending, as the server does (INVALID_ARGUMENT)."""
    if text and tokens:
        raise ValueError("give text or tokens, not both: an Input holds exactly one of them")
    return pb.Input(text=text or "", tokens=list(tokens or ()))


def make_output(top_k: Optional[int] = 5, all_positions: bool = False, logprobs: bool = False) -> pb.OutputOptions:
    out = pb.OutputOptions(all_positions=all_positions, logprobs=logprobs)
    if top_k is not None:
        out.top_k = top_k
    return out


def make_sampling(
    max_tokens: int = 64, temperature: Optional[float] = None, top_k: int = 0, top_p: Optional[float] = None,
    seed: Optional[int] = None, stop: Sequence[str] = (),
) -> pb.SamplingParams:
    s = pb.SamplingParams(max_tokens=max_tokens, top_k=top_k, stop=list(stop))
    if temperature is not None:
        s.temperature = temperature
    if top_p is not None:
        s.top_p = top_p
    if seed is not None:
        s.seed = seed
    return s


def set_expected_steps(message, expected_steps: Optional[int]) -> None:
    """Apply the step only if the session has exactly this many steps (None: unconditionally)."""
    if expected_steps is not None:
        message.expected_steps = expected_steps


def open_request(session_id: str, create: bool, ttl: int, end_with_stream: Optional[bool],
                 output: pb.OutputOptions, request_id: str = "") -> pb.StreamRequest:
    o = pb.OpenStream(session_id=session_id, create=create, ttl_seconds=ttl, output=output, request_id=request_id)
    if end_with_stream is not None:
        o.end_with_stream = end_with_stream
    return pb.StreamRequest(open=o)


def step_request(text: Optional[str] = None, tokens: Optional[Sequence[int]] = None,
                 output: Optional[pb.OutputOptions] = None, tag: str = "", start: bool = False, end: bool = False,
                 expected_steps: Optional[int] = None) -> pb.StreamRequest:
    step = pb.StreamStep(input=make_input(text, tokens), tag=tag, start=start, end=end)
    if output is not None:
        step.output.CopyFrom(output)
    set_expected_steps(step, expected_steps)
    return pb.StreamRequest(step=step)
