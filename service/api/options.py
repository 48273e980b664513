"""Request options checked before any work: what a step returns, how Generate
samples, and whether a reply fits the reply cap (so a step whose answer could
never reach the client is refused before it runs, not after it changed state).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .errors import InvalidArgument

DEFAULT_TOP_K = 5
DEFAULT_MAX_TOKENS = 64
MAX_STOPS, MAX_STOP_BYTES = 16, 256
# Upper bounds on the encoded size of one lstm.v1 Prediction (see lstm.proto):
# position and framing, one Candidate (token, prob, logprob, piece, text and
# framing, plus its piece and text: at most 4 bytes each for a byte vocabulary,
# the vocabulary's longest otherwise), one packed float of `logprobs`; plus the
# StepResult around them.
PREDICTION_BYTES, CANDIDATE_BYTES, LOGPROB_BYTES, RESULT_BYTES = 16, 32, 4, 512
BYTE_PIECE = 4  # CANDIDATE_BYTES already counts a piece and a text this long


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: no cut
    top_p: float = 1.0  # 1: no cut
    seed: Optional[int] = None  # None: random


@dataclass(frozen=True)
class StepOptions:
    top_k: int = DEFAULT_TOP_K
    all_positions: bool = False
    logprobs: bool = False


@dataclass(frozen=True)
class GenerateOptions:
    max_tokens: int
    sampling: SamplingOptions
    stop: Sequence[str] = ()  # matched on the generated text, whatever the vocabulary


def step_options(top_k: Optional[int], all_positions: bool, logprobs: bool, vocab_size: int) -> StepOptions:
    k = DEFAULT_TOP_K if top_k is None else top_k
    if not 0 <= k <= vocab_size:
        raise InvalidArgument(f"top_k {k} is out of range: allowed 0 to {vocab_size}", field="output.top_k")
    return StepOptions(min(k, vocab_size), bool(all_positions), bool(logprobs))


def reply_bytes(tokens: int, options: StepOptions, vocab_size: int, piece_bytes: int = BYTE_PIECE) -> int:
    """An upper bound on the encoded size of a step's reply (``piece_bytes``: the vocabulary's longest piece)."""
    positions = tokens if options.all_positions else 1
    logprobs = vocab_size * LOGPROB_BYTES + 8 if options.logprobs else 0
    candidate = CANDIDATE_BYTES + 2 * max(0, piece_bytes - BYTE_PIECE)
    per = PREDICTION_BYTES + options.top_k * candidate + logprobs
    return RESULT_BYTES + positions * per


def check_reply(tokens: int, options: StepOptions, vocab_size: int, cap: int, piece_bytes: int = BYTE_PIECE) -> None:
    """InvalidArgument, before anything runs, when the reply could exceed ``cap`` bytes."""
    size = reply_bytes(tokens, options, vocab_size, piece_bytes)
    if size > cap:
        raise InvalidArgument(
            f"the reply to {tokens} tokens with these output options could reach {size} bytes, over the "
            f"{cap}-byte reply cap (--max-reply-bytes; most clients accept 4 MiB); ask for fewer positions "
            "(all_positions=false), a smaller top_k, no logprobs, or send fewer tokens per message",
            field="output", reason="REPLY_TOO_LARGE",
        )


def generate_options(
    max_tokens: int, temperature: Optional[float], top_k: int, top_p: Optional[float],
    seed: Optional[int], stop: Sequence[str], vocab_size: int, limit: int,
) -> GenerateOptions:
    n = max_tokens or min(DEFAULT_MAX_TOKENS, limit)
    if not 1 <= n <= limit:
        raise InvalidArgument(f"max_tokens {n} is out of range: allowed 1 to {limit} (0: {DEFAULT_MAX_TOKENS})",
                              field="sampling.max_tokens")
    t = 1.0 if temperature is None else float(temperature)
    if not 0.0 <= t <= 10.0 or t != t:
        raise InvalidArgument(f"temperature {t} is out of range: allowed 0 (greedy) to 10",
                              field="sampling.temperature")
    if not 0 <= top_k <= vocab_size:
        raise InvalidArgument(f"top_k {top_k} is out of range: allowed 0 (no cut) to {vocab_size}",
                              field="sampling.top_k")
    p = 1.0 if top_p is None else float(top_p)
    if not 0.0 < p <= 1.0:
        raise InvalidArgument(f"top_p {p} is out of range: allowed above 0 up to 1", field="sampling.top_p")
    if len(stop) > MAX_STOPS:
        raise InvalidArgument(f"{len(stop)} stop sequences; allowed at most {MAX_STOPS}", field="sampling.stop")
    if any(not 1 <= len(s.encode("utf-8", "surrogatepass")) <= MAX_STOP_BYTES for s in stop):
        raise InvalidArgument(f"each stop sequence must be 1 to {MAX_STOP_BYTES} UTF-8 bytes", field="sampling.stop")
    return GenerateOptions(n, SamplingOptions(t, top_k, p, seed), tuple(stop))
