"""What every servicer asks of an engine before anything runs (service/engine_face.py),
on an in-process Engine without a server: input, step and generate options checked against
the model and the configured limits, each refusal saying what is allowed."""
from __future__ import annotations

import numpy as np
import pytest

from lstm_service.model.card import load_card
from lstm_service.service.proc.config import Config
from lstm_service.service.core.engine import Engine
from lstm_service.service.api.engine_base import EngineBase
from lstm_service.service.api.errors import InvalidArgument
from lstm_service.service.core.runtime import Runtime


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    config = Config(model=str(tiny_model_dir), device="cpu", max_tokens_per_message=8, max_generate_tokens=16)
    card = load_card(tiny_model_dir)
    engine = Engine(config, card, Runtime.from_config(card, config))
    yield engine
    engine.close()


def test_the_engine_is_an_engine_base(engine):
    assert isinstance(engine, EngineBase)
    assert [z.shape for z in engine.zeros] == [(engine.card.layers, engine.card.hidden_size)] * len(
        engine.card.state_names)
    assert not any(z.any() for z in engine.zeros)


def test_inputs_are_tokens_or_text_within_the_message_limit(engine):
    assert list(engine.tokens([1, 2, 3], "")) == [1, 2, 3]
    assert list(engine.tokens([], "hi")) == [104, 105]
    with pytest.raises(InvalidArgument, match="input is empty: send 1 to 8 tokens"):
        engine.tokens([], "")
    with pytest.raises(InvalidArgument, match="8"):
        engine.tokens(list(range(9)), "")


def test_step_and_generate_options_are_bounded_by_the_model_and_the_config(engine):
    assert engine.step_options(None, False, False).top_k >= 1
    with pytest.raises(InvalidArgument, match="top_k 999 is out of range: allowed 0 to 256"):
        engine.step_options(999, False, False)
    assert engine.generate_options(16, 0.8, 0, None, 1, []).max_tokens == 16
    with pytest.raises(InvalidArgument, match="max_tokens 17 is out of range: allowed 1 to 16"):
        engine.generate_options(17, 0.8, 0, None, 1, [])
    assert engine.generate_options(0, None, 0, None, None, []).max_tokens == 16  # 0: the default, capped
    assert isinstance(engine.tokens([5], ""), np.ndarray)
