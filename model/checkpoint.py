"""Checkpoints: config.json + a state_dict (never a pickled module).

A checkpoint directory holds
  config.json   the ModelConfig
  model.pt      the model's state_dict (tensors only; loaded with weights_only)
  trainer.pt    optimizer/scheduler state and progress, for --resume
  metrics.json  the best validation loss and training figures so far
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import ModelConfig
from .lm import LanguageModel


class CheckpointError(Exception):
    """A checkpoint directory is missing or incomplete."""


def save_model(directory: Path, model: LanguageModel, metrics: dict) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / "config.json")
    # Write then rename so an interrupted save never leaves a torn file.
    tmp = directory / "model.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(directory / "model.pt")
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def load_model(directory: Path, fast: bool = True) -> LanguageModel:
    directory = Path(directory)
    for name in ("config.json", "model.pt"):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} is not a checkpoint: {name} is missing")
    model = LanguageModel(ModelConfig.load(directory / "config.json"), fast=fast)
    model.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
    return model.eval()


def load_metrics(directory: Path) -> dict:
    path = Path(directory) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}
