"""Generation's sampling loop: draw a token, run it, commit it as it is handed out.

Tokens are sampled one at a time (core/sampling.py), each run through the engine's
batched step and committed under the generation's hold as it is yielded, so a
client never receives a token its session does not hold. Stop sequences match the
generated text, whatever the vocabulary.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, AsyncGenerator, AsyncIterator, Optional

import numpy as np

from ..api.options import GenerateOptions, StepOptions
from ..api.errors import FailedPrecondition
from ..api.values import Caller, Generated, StepResult
from .hold import Base, Hold, Pending
from .sampling import Sampler

if TYPE_CHECKING:
    from .engine import Engine


async def generate(engine: "Engine", session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions,
               expected_steps: Optional[int], caller: Caller) -> AsyncIterator[Generated]:
    """Sample tokens one at a time. Each token is committed (with the prompt, for the
    first) as it is handed to the consumer, and sampling stops as soon as the consumer
    does: the session holds the tokens handed out, so every token a client receives
    is in it; a token whose write was cut off by a cancel may be in it too.

    Use with ``contextlib.aclosing`` so the session is released on cancel.
    """
    engine.quotas.open_stream(caller.principal)  # a long-lived call: it counts as a stream while it runs
    try:
        async with contextlib.aclosing(_generate(engine, session_id, prompt, options, expected_steps,
                                                      caller)) as tokens:
            async for item in tokens:
                yield item
    finally:
        engine.quotas.close_stream(caller.principal)

async def _generate(engine: "Engine", session_id: str, prompt: Optional[np.ndarray], options: GenerateOptions,
                expected_steps: Optional[int], caller: Caller) -> AsyncGenerator[Generated, None]:
    hold = await engine.hold(session_id, caller)
    try:
        base = await hold.base(expected_steps) if hold.session else None  # rewound first, if asked
        logprobs = base.last_logprobs if base else None
        if prompt is None and logprobs is None:
            raise FailedPrecondition(
                "nothing to continue from: the session has consumed no token yet; send a prompt"
                if session_id else "a prompt is required when generating without a session",
                reason="NO_CONTEXT", field="prompt",
            )
        pending = await hold.run(prompt, StepOptions(top_k=0), base=base) if prompt is not None else None
        after = int(prompt[-1]) if prompt is not None and len(prompt) else None
        async for item in sample_tokens(engine, hold, pending, logprobs, options, after, base):
            yield item
    finally:
        hold.release()


async def sample_tokens(engine: "Engine", hold: Hold, pending: Optional[Pending], logprobs: Optional[np.ndarray],
                        options: GenerateOptions, after: Optional[int] = None,
                        base: Optional[Base] = None) -> AsyncIterator[Generated]:
    """Tokens sampled one at a time after ``pending`` (the prompt's step, not committed yet) or
    ``base`` (the held session, maybe rewound); each committed under ``hold`` as it is handed out.
    The first commit carries the prompt's ids and the rewind, so the journal can replay them."""
    sampler, decoder = Sampler(options.sampling), engine.vocab.decoder(after)
    # Stop sequences match the generated text (whatever the vocabulary): ``tail`` keeps just
    # enough of it that a stop sequence straddling two pieces is still seen.
    tail, keep = "", max((len(s) for s in options.stop), default=0)
    state = pending.state if pending else (base.state if base else hold.state)
    steps = pending.result.steps if pending else (base.steps if base else hold.steps)
    prompt_ids = pending.ids if pending is not None and pending.ids is not None else np.zeros(0, np.int64)
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
        first = i == 0
        pending = Pending(StepResult("", steps + 1, unsent + 1, out.scores, one), out.state, start=False,
                          ids=np.concatenate([prompt_ids, [token]]).astype(np.int64) if first else
                          np.array([token], np.int64),
                          base=base if first else None, call_start=first)
        if hold.session is not None:  # the lease proven (write-through: the token in Redis) first
            await engine.before_commit(hold.session, pending)
        hold.commit(pending)
        yield Generated(token, engine.vocab.pieces[token], text, float(logprobs[token]), steps + 1, finish)
        state, steps, logprobs, unsent = out.state, steps + 1, out.scores.last, 0
        if finish:
            return

