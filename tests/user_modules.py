"""Users' own language models, as a user would write them, for the "serve your own model"
tests (exported with ``--module tests/user_modules.py:Class``)."""
from __future__ import annotations

from torch import nn


class BatchFirstLM(nn.Module):
    """input [B,T] -> logits [B,T,V]; hidden (h, c) of [L,B,H] (nn.LSTM keeps it so with batch_first)."""

    def __init__(self, vocab: int, size: int, layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, size)
        self.lstm = nn.LSTM(size, size, layers, batch_first=True)
        self.head = nn.Linear(size, vocab)

    def forward(self, tokens, hidden):
        out, hidden = self.lstm(self.embed(tokens), hidden)
        return self.head(out), hidden


class ForwardWithoutHidden(nn.Module):
    """Not the convention: forward takes no state and returns logits alone."""

    def __init__(self, vocab: int, size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, size)
        self.lstm = nn.LSTM(size, size)
        self.head = nn.Linear(size, vocab)

    def forward(self, tokens):
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out)
