"""Generation's sampling loop: draw a token, run it, commit it as it is handed out.

Tokens are sampled one at a time (core/sampling.py), each run through the engine's
batched step and committed under the generation's hold as it is yielded, so a
client never receives a token its session does not hold. Stop sequences match the
generated text, whatever the vocabulary.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator, Optional

import numpy as np

from ..api.options import GenerateOptions, StepOptions
from ..api.values import Generated, StepResult
from .hold import Hold, Pending
from .sampling import Sampler

if TYPE_CHECKING:
    from .engine import Engine


async def sample_tokens(engine: "Engine", hold: Hold, pending: Optional[Pending], logprobs: Optional[np.ndarray],
                        options: GenerateOptions, after: Optional[int] = None) -> AsyncIterator[Generated]:
    """Tokens sampled one at a time after ``pending`` (the prompt's step, not committed yet) or the
    held session's state; each committed under ``hold`` as it is handed out."""
    sampler, decoder = Sampler(options.sampling), engine.vocab.decoder(after)
    # Stop sequences match the generated text (whatever the vocabulary): ``tail`` keeps just
    # enough of it that a stop sequence straddling two pieces is still seen.
    tail, keep = "", max((len(s) for s in options.stop), default=0)
    state = pending.state if pending else hold.state
    steps = pending.result.steps if pending else hold.steps
    logprobs = pending.result.scores.last if pending else logprobs
    assert logprobs is not None, "the caller checks there is something to continue from"
    unsent = pending.result.consumed if pending else 0  # prompt tokens to commit with the first token
    one = StepOptions(top_k=0)
    for i in range(options.max_tokens):
        token = sampler.sample(logprobs)
        engine.take_tokens(hold.caller, 1)
        out = await engine.sample_step(token, state)
        text = decoder.feed(token)
        finish = "length" if i + 1 == options.max_tokens else None
        if keep and text:
            seen = tail + text
            if any(s in seen for s in options.stop):
                finish = "stop"
            tail = seen[-(keep - 1):] if keep > 1 else ""
        if finish:
            text += decoder.flush()  # the last piece carries whatever the decoder still held
        # Commit the token (and the prompt, the first time) as it is handed out to be written:
        # a client never receives a token its session does not hold.
        hold.commit(Pending(StepResult("", steps + 1, unsent + 1, out.scores, one), out.state, start=False))
        yield Generated(token, engine.vocab.pieces[token], text, float(logprobs[token]), steps + 1, finish)
        state, steps, logprobs, unsent = out.state, steps + 1, out.scores.last, 0
        if finish:
            return

