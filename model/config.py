"""One frozen description of a model's shape, saved as JSON beside its weights."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

CELL_KINDS = ("lstm", "peephole", "coupled", "gru", "rnn")
# Cells that carry a cell state C next to the hidden state h.
CELL_STATE_KINDS = ("lstm", "peephole", "coupled")
# Cells with a cuDNN/MKL-backed torch module and a native ONNX operator.
FAST_PATH_KINDS = ("lstm", "gru", "rnn")


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "lstm"
    vocab_size: int = 256  # byte-level: one id per UTF-8 byte
    embed_size: int = 64
    hidden_size: int = 512
    layers: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.cell not in CELL_KINDS:
            raise ValueError(f"cell must be one of {', '.join(CELL_KINDS)}, got {self.cell!r}")
        for name in ("vocab_size", "embed_size", "hidden_size", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def has_cell_state(self) -> bool:
        return self.cell in CELL_STATE_KINDS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
