"""The shipped default model: its card matches its files and its graph."""
from pathlib import Path

import onnx
import pytest

from lstm_service.model.card import load_card

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "shakespeare"


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_card_matches_files_and_graph(precision):
    card = load_card(SHIPPED)
    path = card.verify(precision)  # raises unless the sha256 matches
    graph = onnx.load(str(path), load_external_data=False).graph
    assert [i.name for i in graph.input] == [s["name"] for s in card.inputs] == ["tokens", "h0", "c0"]
    assert [o.name for o in graph.output] == [s["name"] for s in card.outputs] == ["logits", "hn", "cn"]
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(graph.input[0]) == ["batch", "time"]
    assert dims(graph.input[1]) == [card.layers, "batch", card.hidden_size]
    assert dims(graph.output[0]) == ["batch", "time", card.vocab_size]
    assert card.precisions[precision]["validation_loss"] < 1.6  # measured through onnxruntime at export
