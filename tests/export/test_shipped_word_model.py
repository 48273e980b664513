"""The shipped word model (models/shakespeare-words): its card matches its files, its
graph and its vocabulary, and the text the README uses reads without unknown words."""
from pathlib import Path

import onnx

from lstm_service.model.card import load_card
from lstm_service.service.core.vocab import load_vocab

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "shakespeare-words"


def test_card_matches_files_graph_and_vocabulary():
    card = load_card(SHIPPED)
    graph = onnx.load(str(card.verify("fp32")), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["tokens", "h0", "c0"]
    assert [o.name for o in graph.output] == ["logits", "hn", "cn"]
    vocab = load_vocab(card)  # checks vocab.txt's sha256 and its size against the card
    assert (card.vocab_kind, vocab.size) == ("words", card.vocab_size)
    assert card.raw["source"]["from"] == "torch"
    fp32 = card.precisions["fp32"]
    assert fp32["validation_loss"] < 4.1  # nats/word through onnxruntime at export
    assert fp32["parity"]["torch_vs_onnxruntime"] <= 1e-4 and fp32["parity"]["stepwise_vs_whole"] <= 1e-4
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 5_000_000  # small enough to ship in the repository
    ids = vocab.encode([], "The clouds are in the sky.", 100).tolist()
    assert vocab.unk not in ids and vocab.texts[ids[0]] == "the"
