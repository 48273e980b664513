"""Tiny random-weight models, exported once per test run for every cell kind.

Weights are drawn wider than torch's default initialisation so every
parameter (the peepholes too, which start at zero) shapes the outputs.
"""
from __future__ import annotations

from pathlib import Path

import pytest

TINY = dict(vocab_size=256, embed_size=16, hidden_size=32, layers=2)


def build_tiny_model(cell: str, seed: int = 0):
    import torch

    from lstm_service.model.config import ModelConfig
    from lstm_service.model.lm import LanguageModel

    torch.manual_seed(seed)
    model = LanguageModel(ModelConfig(cell=cell, **TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory):
    """make_tiny_model(cell) -> model directory (model.json, model.onnx, model.int8.onnx).

    The checkpoint it was exported from sits beside it, at ``<dir>/../checkpoint``.
    """
    from lstm_service.export.bundle import write_model_dir
    from lstm_service.model.checkpoint import save_model

    built: dict[str, Path] = {}

    def make(cell: str = "lstm") -> Path:
        if cell not in built:
            root = tmp_path_factory.mktemp(f"tiny-{cell}")
            model = build_tiny_model(cell)
            save_model(root / "checkpoint", model, {"validation_loss": None})
            write_model_dir(model, root / "model", name=f"tiny-{cell}", quantize="int8")
            built[cell] = root / "model"
        return built[cell]

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(make_tiny_model) -> Path:
    return make_tiny_model("lstm")
