"""Exponential moving average (EMA) of a model's parameters, for the checkpoint.

Late in training the weights jitter around a minimum with the optimizer's
noise; their running average sits nearer its centre and usually validates
better than the last iterate (Polyak averaging; SWA does the same with an
equal-weight mean). The average is what gets validated and saved; training
keeps stepping the raw weights.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch
from torch import Tensor, nn


class WeightAverage:
    """``avg <- d*avg + (1-d)*w`` after each step, with ``d = min(decay, (1+n)/(10+n))``.

    The warm-up of ``d`` (n = updates so far) keeps the average from being
    dominated by the random initial weights on short runs.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.average: Dict[str, Tensor] = {n: p.detach().clone() for n, p in model.named_parameters()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        named = dict(model.named_parameters())
        names = list(self.average)
        averages = [self.average[n] for n in names]
        torch._foreach_lerp_(averages, [named[n].detach() for n in names], 1.0 - d)
        self.updates += 1

    @contextmanager
    @torch.no_grad()
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside the block ``model`` holds the averaged weights; its own come back after."""
        named = dict(model.named_parameters())
        saved = {n: named[n].detach().clone() for n in self.average}
        for n, avg in self.average.items():
            named[n].copy_(avg)
        try:
            yield model
        finally:
            for n, w in saved.items():
                named[n].copy_(w)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        if set(state["average"]) != set(self.average):
            raise ValueError("ema state does not match the model's parameters")
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.average = {n: t.clone() for n, t in state["average"].items()}
