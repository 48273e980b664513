"""The explain graph (model.explain.onnx, docs/explain.md) for a user's torch module,
when the module is the classic shape: one nn.Embedding -> one unidirectional
nn.LSTM / nn.GRU / nn.RNN(tanh) -> one nn.Linear head (word_language_model's RNNModel
is). Its weights are copied into this project's LanguageModel, whose cell equations
the explain graph traces; the copy must give the user's module's log-probabilities
(within 1e-4 on several shapes) or no explain graph is written.

Log-probabilities, not logits, are compared (with model.onnx too): a module may return
log_softmax(head(h)) where ours returns head(h), and the service only ever uses the
log-softmax of what a graph returns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from lstm_service.model.config import ModelConfig
from lstm_service.model.lm import LanguageModel

from .explain import _log_softmax
from .parity import CHECK_SHAPES, TOLERANCE, Reference

CELLS = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}


def _only(module: nn.Module, kind):
    found = [m for m in module.modules() if type(m) is kind or (isinstance(kind, tuple) and type(m) in kind)]
    return found[0] if len(found) == 1 else None


def language_model_of(module: nn.Module) -> Optional[LanguageModel]:
    """Our LanguageModel with the module's weights, or None when the module is not the classic shape."""
    embedding, rnn, head = _only(module, nn.Embedding), _only(module, tuple(CELLS)), _only(module, nn.Linear)
    if embedding is None or rnn is None or head is None or head.bias is None:
        return None
    if rnn.bidirectional or not rnn.bias or getattr(rnn, "proj_size", 0) or \
            getattr(rnn, "nonlinearity", "tanh") != "tanh" or rnn.input_size != embedding.embedding_dim or \
            head.in_features != rnn.hidden_size or head.out_features != embedding.num_embeddings:
        return None
    config = ModelConfig(cell=CELLS[type(rnn)], vocab_size=embedding.num_embeddings,
                         embed_size=embedding.embedding_dim, hidden_size=rnn.hidden_size, layers=rnn.num_layers)
    lm = LanguageModel(config).eval()
    with torch.no_grad():
        lm.embedding.weight.copy_(embedding.weight)
        lm.head.weight.copy_(head.weight)
        lm.head.bias.copy_(head.bias)
        for name, value in rnn.named_parameters():
            getattr(lm.recurrent.rnn, name).copy_(value)
    return lm


@torch.no_grad()
def same_as_user(lm: LanguageModel, reference: Reference, seed: int = 0) -> bool:
    """Whether the copy gives the user's module's log-probabilities and states on CHECK_SHAPES."""
    rng = np.random.default_rng(seed)
    config = lm.config
    for batch, steps in CHECK_SHAPES:
        tokens = rng.integers(0, config.vocab_size, size=(batch, steps), dtype=np.int64)
        state = tuple(rng.normal(0, 0.5, size=(config.layers, batch, config.hidden_size)).astype(np.float32)
                      for _ in range(2 if config.has_cell_state else 1))
        want_logits, want_state = reference(tokens, state)
        h = torch.from_numpy(state[0])
        logits, hn, cn = lm(torch.from_numpy(tokens), h, torch.from_numpy(state[-1]))
        got_state = (hn.numpy(), cn.numpy())[: len(state)]
        errors = [np.abs(_log_softmax(logits.numpy()) - _log_softmax(want_logits)).max()]
        errors += [np.abs(g - w).max() for g, w in zip(got_state, want_state)]
        if max(errors) > TOLERANCE:
            return False
    return True


def write_user_explain(module: nn.Module, reference: Reference, out: Path, log) -> Optional[dict]:
    """The card's "explain" entry after writing out/model.explain.onnx, or None (and why, logged)."""
    from .explain import write_explain

    lm = language_model_of(module)
    if lm is None:
        log("no explain graph: the module is not one nn.Embedding -> nn.LSTM/GRU/RNN -> nn.Linear")
        return None
    if not same_as_user(lm, reference):
        log("no explain graph: the module's forward does more than embedding -> recurrent -> head")
        return None
    entry = write_explain(lm, out, out / "model.onnx", log_probs=True)
    log(f"{entry['file']}: explain vs model.onnx {entry['parity']['explain_vs_model_onnx']:.2e} (log-probabilities)")
    return entry
