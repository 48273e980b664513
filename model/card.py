"""model.json: the description of an exported model that serving reads.

Pure standard library on purpose: the service imports this, and the
serving install has no torch. Export writes the card; the service checks
it against the ONNX file before loading.

    {
      "format": "lstm-service-model/1",
      "name": "shakespeare-lstm",
      "cell": "lstm", "has_cell_state": true,
      "vocab": {"kind": "bytes", "size": 256},   # or "words" / "tokenizer" with a file (below)
      "embed_size": 64, "hidden_size": 512, "layers": 3,
      "opset": 17,
      "inputs":  [{"name": "tokens", "dtype": "int64",   "shape": ["batch", "time"]},
                  {"name": "h0",     "dtype": "float32", "shape": [3, "batch", 512]},
                  {"name": "c0",     "dtype": "float32", "shape": [3, "batch", 512]}],
      "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "time", 256]},
                  {"name": "hn", ...}, {"name": "cn", ...}],
      "precisions": {
        "fp32": {"file": "model.onnx", "sha256": "...", "bytes": 123,
                 "validation_loss": 1.43, "validation_bits_per_byte": 2.06},
        "int8": {"file": "model.int8.onnx", ...}
      },
      "validation": {"data": "tinyshakespeare.txt", "fraction": 0.1, "measured_with": "onnxruntime"},
      "training": {...}
    }

GRU and RNN models have no ``c0``/``cn`` and ``has_cell_state`` false.

Vocabularies other than bytes name a file in the model directory, checked by sha256
like the ONNX files (docs/models.md):
    {"kind": "words", "size": 3000, "file": "vocab.txt", "sha256": "...",
     "unk": "<unk>", "eos": "<eos>", "lowercase": true, "split": "punctuation"}
    {"kind": "tokenizer", "size": 8000, "file": "tokenizer.json", "sha256": "..."}
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

FORMAT = "lstm-service-model/1"
CARD_FILE = "model.json"
VOCAB_KINDS = ("bytes", "words", "tokenizer")


def state_names(has_cell_state: bool) -> Tuple[str, ...]:
    """The parts of the recurrent state, in order: ("h", "c") for LSTM-like cells, ("h",) for GRU/RNN.

    Everything that moves state (export, runtime, sessions, batching) treats it
    as one tuple in this order, so no code below has to ask which cell it serves.
    """
    return ("h", "c") if has_cell_state else ("h",)


def signature(vocab_size: int, hidden_size: int, layers: int, has_cell_state: bool) -> Dict[str, list]:
    """The ONNX graph's inputs and outputs, the one place they are written down:
    tokens [B,T] and one ``<part>0`` [L,B,H] per state part in; logits [B,T,V]
    and one ``<part>n`` per state part out."""
    state = [layers, "batch", hidden_size]
    parts = state_names(has_cell_state)
    inputs = [{"name": "tokens", "dtype": "int64", "shape": ["batch", "time"]}]
    inputs += [{"name": f"{p}0", "dtype": "float32", "shape": state} for p in parts]
    outputs = [{"name": "logits", "dtype": "float32", "shape": ["batch", "time", vocab_size]}]
    outputs += [{"name": f"{p}n", "dtype": "float32", "shape": state} for p in parts]
    return {"inputs": inputs, "outputs": outputs}


class ModelCardError(Exception):
    """model.json is missing, malformed or does not match its ONNX file."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    directory: Path
    name: str
    cell: str
    has_cell_state: bool
    vocab_kind: str
    vocab_size: int
    embed_size: int
    hidden_size: int
    layers: int
    opset: int
    inputs: List[Dict[str, Any]]
    outputs: List[Dict[str, Any]]
    precisions: Dict[str, Dict[str, Any]]
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def state_names(self) -> Tuple[str, ...]:
        """The state's parts, in order: ("h", "c") or ("h",)."""
        return state_names(self.has_cell_state)

    @property
    def signature(self) -> Dict[str, list]:
        """The inputs and outputs the ONNX graph must have (names, dtypes, shapes)."""
        return signature(self.vocab_size, self.hidden_size, self.layers, self.has_cell_state)

    def onnx_path(self, precision: str = "fp32") -> Path:
        if precision not in self.precisions:
            raise ModelCardError(
                f"model {self.name!r} has no {precision!r} file; it has: {', '.join(sorted(self.precisions))}"
            )
        return self.directory / self.precisions[precision]["file"]

    def verify(self, precision: str = "fp32") -> Path:
        """The ONNX path for ``precision``, after checking it exists and its sha256 matches."""
        return _checked_file(self.onnx_path(precision), self.precisions[precision].get("sha256"))

    @property
    def vocab(self) -> Dict[str, Any]:
        """The card's "vocab" entry: kind, size and, for words/tokenizer, the file and its options."""
        return dict(self.raw.get("vocab") or {"kind": self.vocab_kind, "size": self.vocab_size})

    def verify_vocab(self) -> Path:
        """The vocabulary file's path (words, tokenizer), after checking it exists and its sha256 matches."""
        entry = self.vocab
        if not entry.get("file"):
            raise ModelCardError(f"model {self.name!r}: a {self.vocab_kind!r} vocabulary needs a file in {CARD_FILE}")
        return _checked_file(self.directory / entry["file"], entry.get("sha256"))

    @property
    def explain(self) -> Dict[str, Any]:
        """The "explain" entry (model.explain.onnx: file, sha256, channels, ...); {} if the model has none."""
        return dict(self.raw.get("explain") or {})

    def verify_explain(self) -> Path:
        """The explain graph's path, after checking it is named, exists and its sha256 matches."""
        entry = self.explain
        if not entry.get("file"):
            raise ModelCardError(f"model {self.name!r} has no explain graph: re-export it (docs/explain.md)")
        return _checked_file(self.directory / entry["file"], entry.get("sha256"))


def _checked_file(path: Path, expected_sha256: Optional[str]) -> Path:
    """``path``, after checking it exists and its sha256 is the one the card records."""
    if not path.is_file():
        raise ModelCardError(f"{path} is named in {CARD_FILE} but does not exist")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelCardError(f"{path} has sha256 {actual}, but {CARD_FILE} says {expected_sha256}")
    return path


def load_card(directory: Path) -> ModelCard:
    directory = Path(directory)
    path = directory / CARD_FILE
    if not path.is_file():
        raise ModelCardError(f"{directory} is not a model directory: {CARD_FILE} is missing")
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ModelCardError(f"{path}: format is {raw.get('format')!r}, expected {FORMAT!r}")
        vocab = raw["vocab"]
        if vocab["kind"] not in VOCAB_KINDS:
            raise ModelCardError(f"{path}: vocab kind {vocab['kind']!r} is not one of {VOCAB_KINDS}")
        return ModelCard(
            directory=directory,
            name=str(raw["name"]),
            cell=str(raw["cell"]),
            has_cell_state=bool(raw["has_cell_state"]),
            vocab_kind=str(vocab["kind"]),
            vocab_size=int(vocab["size"]),
            embed_size=int(raw["embed_size"]),
            hidden_size=int(raw["hidden_size"]),
            layers=int(raw["layers"]),
            opset=int(raw["opset"]),
            inputs=list(raw["inputs"]),
            outputs=list(raw["outputs"]),
            precisions=dict(raw["precisions"]),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelCardError):
            raise
        raise ModelCardError(f"{path} is malformed: {exc!r}") from exc


def write_card(directory: Path, card: Dict[str, Any]) -> Path:
    path = Path(directory) / CARD_FILE
    path.write_text(json.dumps({"format": FORMAT, **card}, indent=2) + "\n")
    return path
