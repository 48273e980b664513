"""codec.step_result writes predictions as wire bytes; it must equal the message
built field by field (codec.step_result_fields) for every shape of result."""
from __future__ import annotations

import numpy as np
import pytest

from service import codec
from service.batcher import StepOutput
from service.engine import StepOptions, StepResult
from service.proto.lstm.v1 import lstm_pb2 as pb
from service.sampling import log_softmax, top_k
from service.vocab import Vocab


@pytest.mark.parametrize("kind,size", [("bytes", 256), ("ids", 300), ("bytes", 1000)])
@pytest.mark.parametrize("positions,k,logprobs", [(1, 5, False), (1, 0, False), (3, 5, True), (200, 256, True), (1, 1, True)])
def test_wire_bytes_equal_field_by_field(kind, size, positions, k, logprobs):
    rng = np.random.default_rng(positions * 1000 + k + size)
    vocab = Vocab(kind, size)
    logits = (rng.standard_normal((positions, size)) * 30).astype(np.float32)
    logits[0, :3] = -np.inf  # probabilities that underflow to 0, logprob -inf
    logits[-1, 7] = 1e4  # one certain token: logprob 0
    lp = log_softmax(logits)
    ids, vals = top_k(lp, min(k, size))
    out = StepOutput(lp, lp[-1].copy(), ids, vals, np.exp(vals), None, None)
    for consumed in (positions, positions + 300):
        result = StepResult("sid-" + "x" * 20, 12345678901, consumed, out, StepOptions(k, positions > 1, logprobs))
        for tag in ("", "t\u00e9g"):
            got, want = pb.StreamResponse(), pb.StreamResponse()
            codec.step_result(got.result, result, vocab, tag)
            codec.step_result_fields(want.result, result, vocab, tag)
            assert got == want
            assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)
