"""Recurrent cells written from their gate equations, one step at a time.

Every cell has the same signature, ``cell(x, h, c) -> (h, c)``, so one
time loop drives them all; cells without a cell state (GRU, plain RNN)
pass ``c`` through untouched. Weight layouts match torch.nn.LSTM / GRU /
RNN (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, gates stacked
in torch's order) so the fast path's weights can be copied in and the two
compared.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor, nn


class _GatedCell(nn.Module):
    """Holds ``gates`` stacked affine maps of the input x and hidden state h."""

    def __init__(self, input_size: int, hidden_size: int, gates: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(gates * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as torch's recurrent modules: U(-1/sqrt(H), 1/sqrt(H)).
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def affine(self, x: Tensor, h: Tensor) -> Tensor:
        return x @ self.weight_ih.t() + self.bias_ih + h @ self.weight_hh.t() + self.bias_hh


class LSTMCell(_GatedCell):
    """The classic LSTM (Hochreiter & Schmidhuber 1997, with forget gate)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, gates=4)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        i, f, candidate, o = self.affine(x, h).chunk(4, 1)
        input_gate = torch.sigmoid(i)  # how much of the candidate to write
        forget_gate = torch.sigmoid(f)  # how much of C_{t-1} to keep
        candidate_cell = torch.tanh(candidate)  # C~_t
        output_gate = torch.sigmoid(o)  # how much of the cell to expose
        c_next = forget_gate * c + input_gate * candidate_cell  # C_t = f*C_{t-1} + i*C~
        h_next = output_gate * torch.tanh(c_next)  # h_t = o*tanh(C_t)
        return h_next, c_next


class PeepholeLSTMCell(_GatedCell):
    """LSTM with peephole connections (Gers & Schmidhuber 2000).

    The forget and input gates look at C_{t-1}; the output gate at C_t.
    Peepholes are diagonal (one weight per unit), as in the paper.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, gates=4)
        self.peephole_i = nn.Parameter(torch.zeros(hidden_size))
        self.peephole_f = nn.Parameter(torch.zeros(hidden_size))
        self.peephole_o = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        i, f, candidate, o = self.affine(x, h).chunk(4, 1)
        input_gate = torch.sigmoid(i + self.peephole_i * c)
        forget_gate = torch.sigmoid(f + self.peephole_f * c)
        c_next = forget_gate * c + input_gate * torch.tanh(candidate)
        output_gate = torch.sigmoid(o + self.peephole_o * c_next)
        h_next = output_gate * torch.tanh(c_next)
        return h_next, c_next


class CoupledLSTMCell(_GatedCell):
    """LSTM with coupled forget and input gates: i = 1 - f (no separate input gate)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, gates=3)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        f, candidate, o = self.affine(x, h).chunk(3, 1)
        forget_gate = torch.sigmoid(f)
        c_next = forget_gate * c + (1.0 - forget_gate) * torch.tanh(candidate)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        return h_next, c_next


class GRUCell(_GatedCell):
    """Gated recurrent unit (Cho et al. 2014), torch's formulation (reset applied after W_hn)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, gates=3)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        x_r, x_z, x_n = (x @ self.weight_ih.t() + self.bias_ih).chunk(3, 1)
        h_r, h_z, h_n = (h @ self.weight_hh.t() + self.bias_hh).chunk(3, 1)
        reset_gate = torch.sigmoid(x_r + h_r)
        update_gate = torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset_gate * h_n)
        h_next = (1.0 - update_gate) * candidate + update_gate * h
        return h_next, c


class RNNCell(_GatedCell):
    """Plain (Elman) RNN: h_t = tanh(W x_t + U h_{t-1} + b)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, gates=1)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        return torch.tanh(self.affine(x, h)), c


CELLS = {
    "lstm": LSTMCell,
    "peephole": PeepholeLSTMCell,
    "coupled": CoupledLSTMCell,
    "gru": GRUCell,
    "rnn": RNNCell,
}
