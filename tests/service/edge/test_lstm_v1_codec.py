"""Plain results -> lstm.v1 messages (service/codec.py), and the scores they carry
(service/scoring.py), without a server: known logits in, the protobuf fields out."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from lstm_service.model.card import load_card
from lstm_service.service.edge import lstm_v1_codec as codec
from lstm_service.service.proc.config import Config
from lstm_service.service.api.values import Generated, SessionInfo, StepResult
from lstm_service.service.api.options import StepOptions
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.core.scoring import score
from lstm_service.service.core.vocab import load_vocab


def logits(rows: int, positions: int, vocab: int = 256) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.normal(size=(rows, positions, vocab)).astype(np.float32) * 3


def test_scores_are_the_log_softmax_its_top_k_and_their_probabilities():
    x = logits(2, 3)
    last, every = score(x, [False, True], [3, 2])
    want = x - np.log(np.exp(x.astype(np.float64)).sum(-1, keepdims=True))
    assert last.logprobs.shape == (1, 256) and every.logprobs.shape == (3, 256)
    np.testing.assert_allclose(every.logprobs, want[1], atol=1e-5)
    np.testing.assert_allclose(last.last, want[0, -1], atol=1e-5)
    assert last.top_ids.shape == (1, 3) and every.top_ids.shape == (3, 2)  # each row its own k
    assert list(last.top_ids[0]) == list(np.argsort(-want[0, -1])[:3])
    np.testing.assert_allclose(last.top_probs, np.exp(last.top_logprobs), rtol=1e-6)


def test_step_result_fills_positions_candidates_and_logprobs_only_when_asked(tiny_model_dir):
    vocab = load_vocab(load_card(tiny_model_dir))
    (scores,) = score(logits(1, 4), [True], [2])
    result = StepResult("s-codec-00000001", steps=10, consumed=4, scores=scores,
                        options=StepOptions(top_k=2, all_positions=True, logprobs=False))
    out = codec.step_result(pb.StepResult(), result, vocab, tag="t1")
    assert (out.session_id, out.steps, out.consumed, out.tag) == ("s-codec-00000001", 10, 4, "t1")
    assert [p.position for p in out.predictions] == [0, 1, 2, 3]
    first = out.predictions[0].top
    assert [c.token for c in first] == list(scores.top_ids[0])
    assert first[0].piece == bytes([first[0].token]) and math.isclose(first[0].prob, math.exp(first[0].logprob),
                                                                      rel_tol=1e-6)
    assert not out.predictions[0].logprobs  # not asked
    asked = StepResult("s", 10, 4, scores, StepOptions(top_k=2, all_positions=True, logprobs=True))
    with_lp = codec.step_result(pb.StepResult(), asked, vocab)
    np.testing.assert_allclose(with_lp.predictions[3].logprobs, scores.logprobs[3], atol=1e-6)


def test_the_last_position_only_is_numbered_from_what_was_consumed(tiny_model_dir):
    vocab = load_vocab(load_card(tiny_model_dir))
    (scores,) = score(logits(1, 5), [False], [1])
    out = codec.step_result(pb.StepResult(), StepResult("s", 5, 5, scores, StepOptions(top_k=1)), vocab)
    assert [p.position for p in out.predictions] == [4]


def test_session_generated_and_model_messages(tiny_model_dir):
    info = SessionInfo("s-codec-00000002", steps=7, age_seconds=3.5, idle_seconds=1.0, ttl_seconds=599.6,
                       expires_in_seconds=598.6, busy=True)
    message = codec.session(info, "tiny-lstm")
    assert (message.id, message.model, message.steps, message.ttl_seconds, message.busy) == (
        "s-codec-00000002", "tiny-lstm", 7, 600, True)
    token = codec.generated(Generated(65, b"A", "A", -0.5, 12, "stop"), "s1")
    assert (token.token, token.text, token.steps, token.finish_reason) == (65, "A", 12, pb.FINISH_REASON_STOP)
    assert codec.generated(Generated(65, b"A", "A", -0.5, 12, None), "s1").finish_reason == \
        pb.FINISH_REASON_UNSPECIFIED
    card = load_card(tiny_model_dir)
    runtime = SimpleNamespace(precision="fp32", providers=["CPUExecutionProvider"])
    model = codec.model(card, runtime, Config(max_generate_tokens=77))
    assert (model.name, model.layers, model.max_generate_tokens, model.providers) == (
        card.name, card.layers, 77, ["CPUExecutionProvider"])
    assert model.sha256 == card.precisions["fp32"]["sha256"]
    no_loss = codec.model(card, SimpleNamespace(precision="int9", providers=[]), Config())
    assert math.isnan(no_loss.validation_loss) and no_loss.sha256 == ""
