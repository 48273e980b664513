"""The language model with its insides showing: per layer and per token, every
gate, the cell state c and the hidden state h.

    explain = ExplainLM(lm)                       # shares lm's weights
    logits, hn, cn, trace = explain(tokens, h0, c0)
    # trace [L, B, T, K, H]: channel k is channel_names(cell)[k]

The gates are computed by the equations of model/cells.py, on the cells'
own parameters (``affine``, ``weight_*``, ``peephole_*``): each tracer below
is its cell's ``forward`` with the intermediate values kept. A test checks
every tracer against its cell (same h and c) so the two cannot drift apart.
For lstm/gru/rnn models on the fast path (nn.LSTM/GRU/RNN) the hand-written
cells get the fast path's weights, as recurrent.copy_fast_to_hand_written
does for the parity test.

The stack is meant for torch.jit.script (the time loop becomes an ONNX Loop,
so T stays dynamic), hence the plain, annotated code.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from .lm import LanguageModel
from .recurrent import FastStack, HandWrittenStack, copy_fast_to_hand_written

# Gate channels per cell kind, in the order they appear in the trace.
GATES: Dict[str, Tuple[str, ...]] = {
    "lstm": ("input", "forget", "candidate", "output"),
    "peephole": ("input", "forget", "candidate", "output"),
    "coupled": ("input", "forget", "candidate", "output"),  # input = 1 - forget, shown as such
    "gru": ("reset", "update", "candidate"),
    "rnn": (),
}


def channel_names(cell: str) -> Tuple[str, ...]:
    """The trace's channels: the gates, then c (cells with a cell state), then h."""
    state = ("c", "h") if cell in ("lstm", "peephole", "coupled") else ("h",)
    return GATES[cell] + state


class _LSTMTrace(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        i, f, candidate, o = self.cell.affine(x, h).chunk(4, 1)
        input_gate = torch.sigmoid(i)
        forget_gate = torch.sigmoid(f)
        candidate_cell = torch.tanh(candidate)
        output_gate = torch.sigmoid(o)
        c_next = forget_gate * c + input_gate * candidate_cell
        h_next = output_gate * torch.tanh(c_next)
        trace = torch.stack([input_gate, forget_gate, candidate_cell, output_gate, c_next, h_next], 1)
        return h_next, c_next, trace


class _PeepholeTrace(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        i, f, candidate, o = self.cell.affine(x, h).chunk(4, 1)
        input_gate = torch.sigmoid(i + self.cell.peephole_i * c)
        forget_gate = torch.sigmoid(f + self.cell.peephole_f * c)
        candidate_cell = torch.tanh(candidate)
        c_next = forget_gate * c + input_gate * candidate_cell
        output_gate = torch.sigmoid(o + self.cell.peephole_o * c_next)
        h_next = output_gate * torch.tanh(c_next)
        trace = torch.stack([input_gate, forget_gate, candidate_cell, output_gate, c_next, h_next], 1)
        return h_next, c_next, trace


class _CoupledTrace(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        f, candidate, o = self.cell.affine(x, h).chunk(3, 1)
        forget_gate = torch.sigmoid(f)
        input_gate = 1.0 - forget_gate  # the coupling, made visible
        candidate_cell = torch.tanh(candidate)
        output_gate = torch.sigmoid(o)
        c_next = forget_gate * c + input_gate * candidate_cell
        h_next = output_gate * torch.tanh(c_next)
        trace = torch.stack([input_gate, forget_gate, candidate_cell, output_gate, c_next, h_next], 1)
        return h_next, c_next, trace


class _GRUTrace(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        cell = self.cell
        x_r, x_z, x_n = (x @ cell.weight_ih.t() + cell.bias_ih).chunk(3, 1)
        h_r, h_z, h_n = (h @ cell.weight_hh.t() + cell.bias_hh).chunk(3, 1)
        reset_gate = torch.sigmoid(x_r + h_r)
        update_gate = torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset_gate * h_n)
        h_next = (1.0 - update_gate) * candidate + update_gate * h
        return h_next, c, torch.stack([reset_gate, update_gate, candidate, h_next], 1)


class _RNNTrace(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        h_next = torch.tanh(self.cell.affine(x, h))
        return h_next, c, h_next.unsqueeze(1)


TRACERS = {
    "lstm": _LSTMTrace,
    "peephole": _PeepholeTrace,
    "coupled": _CoupledTrace,
    "gru": _GRUTrace,
    "rnn": _RNNTrace,
}


def hand_written_cells(lm: LanguageModel) -> nn.ModuleList:
    """lm's recurrent layers as model/cells.py cells with lm's weights (shared when already hand-written)."""
    recurrent = lm.recurrent
    if isinstance(recurrent, HandWrittenStack):
        return recurrent.cells
    assert isinstance(recurrent, FastStack), type(recurrent)
    hand = HandWrittenStack(lm.config).to(lm.head.weight.device)
    copy_fast_to_hand_written(recurrent, hand)
    return hand.cells


class ExplainLM(nn.Module):
    """tokens [B,T], h0/c0 [L,B,H] -> logits [B,T,V], hn, cn [L,B,H], trace [L,B,T,K,H].

    For gru/rnn ``c0`` is passed through as ``cn`` unchanged (one code path).
    """

    def __init__(self, lm: LanguageModel) -> None:
        super().__init__()
        self.config = lm.config
        self.channels: List[str] = list(channel_names(lm.config.cell))
        self.embedding = lm.embedding
        self.head = lm.head
        tracer = TRACERS[lm.config.cell]
        self.tracers = nn.ModuleList([tracer(cell) for cell in hand_written_cells(lm)])

    def forward(self, tokens: Tensor, h0: Tensor, c0: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.embedding(tokens)  # [B,T,E]
        h_out: List[Tensor] = []
        c_out: List[Tensor] = []
        traces: List[Tensor] = []
        for layer, tracer in enumerate(self.tracers):
            h_t, c_t = h0[layer], c0[layer]
            outputs: List[Tensor] = []
            steps: List[Tensor] = []
            for t in range(x.size(1)):
                h_t, c_t, trace_t = tracer(x[:, t], h_t, c_t)  # trace_t [B,K,H]
                outputs.append(h_t)
                steps.append(trace_t)
            x = torch.stack(outputs, 1)  # [B,T,H], the next layer's input
            traces.append(torch.stack(steps, 1))  # [B,T,K,H]
            h_out.append(h_t)
            c_out.append(c_t)
        logits = self.head(x)
        return logits, torch.stack(h_out, 0), torch.stack(c_out, 0), torch.stack(traces, 0)
