"""Multi-layer recurrent stacks: the torch fast path and the hand-written loop.

Both take and return ``(x [B,T,I], h [L,B,H], c [L,B,H]) -> (y [B,T,H], h, c)``.
For GRU/RNN, ``c`` is carried through unchanged so callers need one code path.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor, nn

from .cells import CELLS
from .config import FAST_PATH_KINDS, ModelConfig


class HandWrittenStack(nn.Module):
    """Layers of hand-written cells unrolled over time by a Python loop.

    TorchScript compiles the loop into an ONNX ``Loop`` so the sequence
    axis stays dynamic in the exported graph.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cell = CELLS[config.cell]
        sizes = [config.embed_size] + [config.hidden_size] * (config.layers - 1)
        self.cells = nn.ModuleList([cell(size, config.hidden_size) for size in sizes])
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        h_out: List[Tensor] = []
        c_out: List[Tensor] = []
        for layer, cell in enumerate(self.cells):
            if layer > 0:
                x = self.dropout(x)
            h_t, c_t = h[layer], c[layer]
            steps: List[Tensor] = []
            for t in range(x.size(1)):
                h_t, c_t = cell(x[:, t], h_t, c_t)
                steps.append(h_t)
            x = torch.stack(steps, 1)
            h_out.append(h_t)
            c_out.append(c_t)
        return x, torch.stack(h_out, 0), torch.stack(c_out, 0)


class FastStack(nn.Module):
    """torch.nn.LSTM / GRU / RNN: fused kernels, exported as native ONNX ops."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        module = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[config.cell]
        self.has_cell_state = config.has_cell_state
        self.rnn = module(
            config.embed_size,
            config.hidden_size,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        if self.has_cell_state:
            y, (h, c) = self.rnn(x, (h, c))
        else:
            y, h = self.rnn(x, h)
        return y, h, c


def build_stack(config: ModelConfig, fast: bool = True) -> nn.Module:
    if fast and config.cell in FAST_PATH_KINDS:
        return FastStack(config)
    return HandWrittenStack(config)


def copy_fast_to_hand_written(fast: FastStack, hand: HandWrittenStack) -> None:
    """Give the hand-written cells the fast path's weights (same layout)."""
    with torch.no_grad():
        for layer, cell in enumerate(hand.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(fast.rnn, f"{name}_l{layer}"))
