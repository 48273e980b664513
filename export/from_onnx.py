"""Rebuild the torch LanguageModel of an exported lstm/gru/rnn model from the
weights inside its model.onnx, for models shipped without a checkpoint.

The torch exporter writes one native LSTM/GRU/RNN node per layer (W, R, B
initialisers, gates in ONNX's order), a Gather on the embedding table and a
MatMul + Add for the head. ONNX stacks the gates as i,o,f,c (LSTM) and
z,r,h (GRU); torch as i,f,g,o and r,z,n, so the blocks are reordered.
The caller checks the result against model.onnx (export/explain.py does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from lstm_service.model.config import ModelConfig
from lstm_service.model.lm import LanguageModel

# For each torch gate block, the ONNX block it comes from.
TORCH_FROM_ONNX = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}
OP_OF_CELL = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def _reorder(blocks: np.ndarray, order: List[int]) -> np.ndarray:
    parts = np.split(blocks, len(order), axis=0)
    return np.concatenate([parts[i] for i in order], axis=0)


def _initializers(graph) -> Dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def _layers(graph, weights: Dict[str, np.ndarray], op: str) -> List[Dict[str, np.ndarray]]:
    order = TORCH_FROM_ONNX[op]
    layers = []
    for node in graph.node:
        if node.op_type != op:
            continue
        w, r, b = (weights[name][0] for name in node.input[1:4])
        half = b.shape[0] // 2
        layers.append({
            "weight_ih": _reorder(w, order), "weight_hh": _reorder(r, order),
            "bias_ih": _reorder(b[:half], order), "bias_hh": _reorder(b[half:], order),
        })
    return layers


def _head(graph, weights: Dict[str, np.ndarray]):
    matmul = next(n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights)
    add = next(n for n in graph.node if n.op_type == "Add" and matmul.output[0] in n.input)
    bias = next(weights[name] for name in add.input if name in weights)
    return weights[matmul.input[1]].T, bias


def model_from_onnx(path: Path, card) -> LanguageModel:
    """The LanguageModel whose export is ``path`` (a fast-path lstm/gru/rnn model)."""
    import onnx

    if card.cell not in OP_OF_CELL:
        raise ValueError(f"cannot rebuild a {card.cell!r} model from ONNX: only {', '.join(OP_OF_CELL)}")
    graph = onnx.load(str(path)).graph
    weights = _initializers(graph)
    gather = next(n for n in graph.node if n.op_type == "Gather" and n.input[1] == "tokens")
    layers = _layers(graph, weights, OP_OF_CELL[card.cell])
    if len(layers) != card.layers:
        raise ValueError(f"{path}: {len(layers)} {OP_OF_CELL[card.cell]} nodes, the card says {card.layers} layers")
    config = ModelConfig(cell=card.cell, vocab_size=card.vocab_size, embed_size=card.embed_size,
                         hidden_size=card.hidden_size, layers=card.layers)
    model = LanguageModel(config).eval()
    head_weight, head_bias = _head(graph, weights)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.from_numpy(np.array(weights[gather.input[0]])))
        model.head.weight.copy_(torch.from_numpy(np.ascontiguousarray(head_weight)))
        model.head.bias.copy_(torch.from_numpy(np.array(head_bias)))
        for k, layer in enumerate(layers):
            for name, value in layer.items():
                getattr(model.recurrent.rnn, f"{name}_l{k}").copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return model
