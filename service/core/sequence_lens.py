"""Give a served graph's recurrent operators a ``sequence_lens`` input, in memory, so one
onnxruntime call can run rows of different lengths (a decode step beside a prefill chunk).

    edited = with_sequence_lens(model_bytes)  # None: the graph does not qualify

The ONNX LSTM, GRU and RNN operators take an optional ``sequence_lens`` [B] int32
input: row b runs sequence_lens[b] steps, its outputs past that are zero, and its
final state is the state after its own last step. Exported models leave that input
empty. Here it is wired to a new graph input of that name by editing the model's
protobuf bytes at the wire-format level, so serving needs no ``onnx`` package and
models exported before this existed gain it too; the file on disk (and the sha256
the card checks) stays as it is.

A graph qualifies only when every recurrence in it is a top-level LSTM/GRU/RNN node
whose ``sequence_lens`` is unused: a Loop or Scan (the peephole and coupled cells'
exported time loop) carries its state through every padded step, and the quantized
DynamicQuantizeLSTM is not batch-exact anyway (its activations' scale is computed over
the whole batch). Whether the edited graph really gives each row exactly what it
gives alone is not assumed here: service/core/runtime.py probes it at load time.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

NAME = "sequence_lens"
RECURRENT = {"LSTM", "GRU", "RNN"}
TIME_LOOPS = {"Loop", "Scan", "DynamicQuantizeLSTM"}  # recurrences that would not honour sequence_lens
INT32 = 6  # TensorProto.INT32

# Field numbers of onnx.proto that are read or written here.
MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INPUT = 1, 11
NODE_INPUT, NODE_OP_TYPE, NODE_DOMAIN = 1, 4, 7

Field = Tuple[int, Optional[bytes], bytes]  # (number, payload of a length-delimited field or None, raw bytes)


def _read_varint(buf: bytes, i: int) -> Tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buf: bytes) -> List[Field]:
    """The message's fields in order, each with its raw bytes (re-emitted unchanged unless edited)."""
    out: List[Field] = []
    i = 0
    while i < len(buf):
        start = i
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        payload = None
        if wire == 0:
            _, i = _read_varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _read_varint(buf, i)
            payload = buf[i:i + size]
            i += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, payload, buf[start:i]))
    return out


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _lens_input() -> bytes:
    """ValueInfoProto: sequence_lens, int32 [batch]."""
    dim = _bytes_field(2, b"batch")  # Dimension.dim_param
    shape = _bytes_field(1, dim)  # TensorShapeProto.dim
    tensor = _int_field(1, INT32) + _bytes_field(2, shape)  # TypeProto.Tensor: elem_type, shape
    return _bytes_field(1, NAME.encode()) + _bytes_field(2, _bytes_field(1, tensor))  # name, type.tensor_type


def _text(fields: List[Field], number: int) -> str:
    return next((p.decode() for n, p, _ in fields if n == number and p is not None), "")


def _edit_node(node: bytes) -> Optional[bytes]:
    """The node with sequence_lens wired in; None when its sequence_lens is taken already."""
    fields = _fields(node)
    inputs = [p.decode() for n, p, _ in fields if n == NODE_INPUT and p is not None]
    if len(inputs) > 4 and inputs[4]:
        return None
    inputs = (inputs + [""] * 4)[:4] + [NAME] + inputs[5:]
    head = b"".join(_bytes_field(NODE_INPUT, name.encode()) for name in inputs)
    return head + b"".join(raw for n, _, raw in fields if n != NODE_INPUT)


def _edit_graph(graph: bytes) -> Optional[bytes]:
    out: List[bytes] = []
    recurrent = 0
    for number, payload, raw in _fields(graph):
        if number == GRAPH_INPUT and payload is not None and _text(_fields(payload), 1) == NAME:
            return None  # the name is taken
        if number == GRAPH_NODE and payload is not None:
            node = _fields(payload)
            op, domain = _text(node, NODE_OP_TYPE), _text(node, NODE_DOMAIN)
            if op in TIME_LOOPS:
                return None
            if op in RECURRENT and domain in ("", "ai.onnx"):
                edited = _edit_node(payload)
                if edited is None:
                    return None
                recurrent += 1
                raw = _bytes_field(GRAPH_NODE, edited)
        out.append(raw)
    if not recurrent:
        return None
    return b"".join(out) + _bytes_field(GRAPH_INPUT, _lens_input())


def with_sequence_lens(model: bytes) -> Optional[bytes]:
    """``model`` (a serialized ModelProto) with a ``sequence_lens`` input feeding every
    recurrent node, or None when the graph does not qualify (see the module's docstring)."""
    try:
        fields = _fields(model)
    except (IndexError, ValueError):
        return None
    out: List[bytes] = []
    edited = False
    for number, payload, raw in fields:
        if number == MODEL_GRAPH and payload is not None:
            graph = _edit_graph(payload)
            if graph is None:
                return None
            raw, edited = _bytes_field(MODEL_GRAPH, graph), True
        out.append(raw)
    return b"".join(out) if edited else None
