"""Language model: token embedding -> recurrent stack -> linear head to the vocabulary."""
from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from .config import ModelConfig
from .recurrent import build_stack


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig, fast: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        self.recurrent = build_stack(config, fast=fast)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def initial_state(self, batch: int) -> Tuple[Tensor, Tensor]:
        shape = (self.config.layers, batch, self.config.hidden_size)
        weight = self.head.weight
        return weight.new_zeros(shape), weight.new_zeros(shape)

    def forward(self, tokens: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """tokens [B,T] int64, h/c [L,B,H] -> logits [B,T,V], h [L,B,H], c [L,B,H]."""
        x = self.embedding(tokens)  # [B,T,E]
        y, h, c = self.recurrent(x, h, c)  # [B,T,H]
        return self.head(self.dropout(y)), h, c
