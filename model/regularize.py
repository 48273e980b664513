"""Training-only regularisation for recurrent LMs (AWD-LSTM, Merity et al. 2017).

``RegularizedForward`` runs a ``LanguageModel``'s own parameters through the
same computation as ``LanguageModel.forward`` with, while training:

- embedding dropout: whole byte embeddings dropped (one mask per chunk),
- locked (variational) dropout: one mask per stream, shared over every time
  step, on the embedded inputs, between layers and on the last layer's output,
- weight drop (DropConnect) on each layer's hidden-to-hidden matrix W_hh,
  one mask per chunk, applied functionally so the stored weight never changes.

It holds no parameters of its own: the model's state_dict, its config and so
the exported graph are exactly what they are without it. In eval mode every
mask is off and the output equals ``LanguageModel.forward``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, _VF, nn

from .lm import LanguageModel
from .recurrent import FastStack


@dataclass(frozen=True)
class Regularization:
    input_dropout: float = 0.0  # locked, on the embedded bytes
    hidden_dropout: float = 0.0  # locked, between recurrent layers
    output_dropout: float = 0.0  # locked, on the last layer's output (before the head)
    weight_drop: float = 0.0  # DropConnect on W_hh
    embed_dropout: float = 0.0  # whole embedding rows

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{f.name.replace('_', '-')} must be in [0, 1), got {value}")


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on [B,T,F] with one mask per stream and feature, shared over T."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1.0 - p) / (1.0 - p)
    return x * mask


def embedding_dropout(embedding: nn.Embedding, tokens: Tensor, p: float, training: bool) -> Tensor:
    """Look up ``tokens`` with whole rows of the table dropped (the byte is unseen this chunk)."""
    weight = embedding.weight
    if training and p > 0.0:
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - p) / (1.0 - p)
        weight = weight * mask
    return F.embedding(tokens, weight)


# One layer of torch's fused kernels, by cell kind; the same calls nn.LSTM/GRU/RNN make.
_FUSED = {"lstm": _VF.lstm, "gru": _VF.gru, "rnn": _VF.rnn_tanh}


class RegularizedForward(nn.Module):
    """``forward(tokens, h, c) -> (logits, h, c)`` of ``lm`` with the regularisers of ``reg``."""

    def __init__(self, lm: LanguageModel, reg: Regularization) -> None:
        super().__init__()
        self.lm = lm
        self.reg = reg

    def forward(self, tokens: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        lm, reg, training = self.lm, self.reg, self.training
        x = embedding_dropout(lm.embedding, tokens, reg.embed_dropout, training)
        x = locked_dropout(x, reg.input_dropout, training)
        h_out: List[Tensor] = []
        c_out: List[Tensor] = []
        for layer in range(lm.config.layers):
            if layer > 0:
                x = locked_dropout(x, reg.hidden_dropout, training)
            x, h_n, c_n = self._layer(layer, x, h[layer], c[layer])
            h_out.append(h_n)
            c_out.append(c_n)
        y = locked_dropout(x, reg.output_dropout, training)
        return lm.head(y), torch.stack(h_out, 0), torch.stack(c_out, 0)

    def _drop_weight(self, weight: Tensor) -> Tensor:
        # Functional, so the parameter itself stays untouched and gets the gradient.
        return F.dropout(weight, self.reg.weight_drop, training=self.training)

    def _layer(self, layer: int, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        stack, config = self.lm.recurrent, self.lm.config
        if isinstance(stack, FastStack):
            rnn = stack.rnn
            weights = [getattr(rnn, f"weight_ih_l{layer}"), self._drop_weight(getattr(rnn, f"weight_hh_l{layer}")),
                       getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")]
            hx = (h[None], c[None]) if config.has_cell_state else h[None]
            # num_layers=1, dropout=0: layers and their dropout are done here, one at a time.
            out = _FUSED[config.cell](x, hx, weights, True, 1, 0.0, self.training, False, True)
            if config.has_cell_state:
                return out[0], out[1][0], out[2][0]
            return out[0], out[1][0], c
        cell = stack.cells[layer]
        params = {"weight_hh": self._drop_weight(cell.weight_hh)}
        steps: List[Tensor] = []
        for t in range(x.size(1)):
            h, c = torch.func.functional_call(cell, params, (x[:, t], h, c), strict=False)
            steps.append(h)
        return torch.stack(steps, 1), h, c
