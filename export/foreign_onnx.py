"""An ONNX language model exported elsewhere -> the service's signature, by a thin wrapper.

The mapping names the foreign graph's tensors: the token input, the state pairs
(input=output, h first, then c for an LSTM) and the logits output. They are checked
against the graph (present, rank, dtype, the pairs' shapes agreeing), then the graph
is wrapped, not edited: new inputs ``tokens``/``h0``/``c0`` feed the old ones
through Identity (Cast for int32 tokens, Transpose for a time-first layout), and
the old outputs feed new outputs ``logits``/``hn``/``cn`` the same way. Nothing
inside the graph (subgraphs included) is renamed, and the server sees exactly the
signature of our own models, so serving needs no mapping at all.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .onnx import ExportError

PART_NAMES = ("h", "c")
SERVICE_NAMES = ("tokens", "h0", "c0", "logits", "hn", "cn")


@dataclass(frozen=True)
class Mapping:
    tokens: str
    logits: str
    state: Tuple[Tuple[str, str], ...]  # (input, output) per part: h, then c
    time_first: bool = False  # tokens [T,B] and logits [T,B,V]


def parse_state(text: str) -> Tuple[Tuple[str, str], ...]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name_in, sep, name_out = item.partition("=")
        if not sep or not name_in or not name_out:
            raise ExportError(f"--state {text!r}: expected IN=OUT pairs, h first: h0=hn or h0=hn,c0=cn")
        pairs.append((name_in.strip(), name_out.strip()))
    return tuple(pairs)


def load_mapping_file(path: Path) -> Mapping:
    """A small YAML (or JSON) file: tokens, logits, state {in: out, ...} (h first), time_first."""
    text = Path(path).read_text()
    try:
        import yaml

        raw = yaml.safe_load(text)
    except ImportError:
        raw = json.loads(text)
    if not isinstance(raw, dict) or not {"tokens", "logits", "state"} <= set(raw):
        raise ExportError(f"--mapping {path}: expected keys tokens, logits, state (and optionally time_first)")
    state = raw["state"]
    pairs = tuple(state.items()) if isinstance(state, dict) else parse_state(str(state))
    return Mapping(str(raw["tokens"]), str(raw["logits"]), tuple((str(a), str(b)) for a, b in pairs),
                   bool(raw.get("time_first", False)))


def _value_infos(graph) -> Tuple[Dict[str, object], Dict[str, object]]:
    initialized = {t.name for t in graph.initializer}
    inputs = {v.name: v for v in graph.input if v.name not in initialized}
    return inputs, {v.name: v for v in graph.output}


def _shape(value) -> List[object]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _dtype(value) -> str:
    from onnx import TensorProto

    return TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()


def check_mapping(model, mapping: Mapping) -> Tuple[int, int, Optional[int]]:
    """(layers, hidden, vocab size if static) after checking the mapping against the graph."""
    inputs, outputs = _value_infos(model.graph)

    def find(name: str, where: Dict[str, object], what: str, flag: str):
        if name not in where:
            kind = "inputs" if where is inputs else "outputs"
            raise ExportError(f"{flag} names {what} {name!r}, which is not one of the graph's {kind}: "
                              f"{', '.join(sorted(where)) or 'none'}")
        return where[name]

    tokens = find(mapping.tokens, inputs, "the token input", "--tokens")
    if _dtype(tokens) not in ("int64", "int32") or len(_shape(tokens)) != 2:
        raise ExportError(f"--tokens {mapping.tokens!r} is {_dtype(tokens)} {_shape(tokens)}; expected int64 or "
                          f"int32 of rank 2 ({'[T,B]' if mapping.time_first else '[B,T]'})")
    logits = find(mapping.logits, outputs, "the logits output", "--logits")
    if _dtype(logits) != "float" or len(_shape(logits)) != 3:
        raise ExportError(f"--logits {mapping.logits!r} is {_dtype(logits)} {_shape(logits)}; expected float32 of "
                          f"rank 3 ({'[T,B,V]' if mapping.time_first else '[B,T,V]'})")
    if len(mapping.state) not in (1, 2):
        raise ExportError(f"--state names {len(mapping.state)} pairs; expected h0=hn (GRU/RNN) or h0=hn,c0=cn (LSTM)")
    sizes = set()
    for part, (name_in, name_out) in zip(PART_NAMES, mapping.state):
        for value in (find(name_in, inputs, f"the {part} state input", "--state"),
                      find(name_out, outputs, f"the {part} state output", "--state")):
            shape = _shape(value)
            if _dtype(value) != "float" or len(shape) != 3 or not all(isinstance(d, int) for d in (shape[0], shape[2])):
                raise ExportError(f"--state {value.name!r} is {_dtype(value)} {shape}; expected float32 [L,B,H] "
                                  "with L and H fixed numbers")
            sizes.add((shape[0], shape[2]))
    if len(sizes) != 1:
        raise ExportError(f"--state pairs disagree on [L, H]: {sorted(sizes)}; every state input and output of a "
                          "model has the same layers and hidden size")
    unmapped = set(inputs) - {mapping.tokens, *(a for a, _ in mapping.state)}
    if unmapped:
        raise ExportError(f"the graph's inputs {sorted(unmapped)} are not in the mapping; the service feeds only "
                          "tokens and the state")
    layers, hidden = sizes.pop()
    vocab = _shape(logits)[2]
    return int(layers), int(hidden), vocab if isinstance(vocab, int) and vocab > 0 else None


def wrap(model, mapping: Mapping, layers: int, hidden: int, vocab: object):
    """The foreign model with the service's input and output names (and layout)."""
    from onnx import TensorProto, helper

    graph = model.graph
    taken = {v.name for v in graph.value_info} | {n for node in graph.node for n in (*node.input, *node.output)}
    foreign = {mapping.tokens, mapping.logits, *(n for pair in mapping.state for n in pair)}
    clash = sorted((taken - foreign) & set(SERVICE_NAMES))
    if clash:
        raise ExportError(f"the graph already uses {clash} for other tensors; the service's names are "
                          f"{', '.join(SERVICE_NAMES)}")
    inputs, outputs = _value_infos(graph)
    adapted = [n for n, needs in ((mapping.tokens, mapping.time_first or _dtype(inputs[mapping.tokens]) == "int32"),
                                  (mapping.logits, mapping.time_first)) if needs and n in SERVICE_NAMES]
    if adapted:
        raise ExportError(f"the graph's {adapted[0]!r} needs a Transpose or Cast to the service's layout, but "
                          "already has the service's name; rename it in the graph first")
    state = [layers, "batch", hidden]
    new_inputs = [("tokens", mapping.tokens, TensorProto.INT64, ["batch", "time"])]
    new_inputs += [(f"{p}0", a, TensorProto.FLOAT, state) for p, (a, _) in zip(PART_NAMES, mapping.state)]
    new_outputs = [("logits", mapping.logits, TensorProto.FLOAT, ["batch", "time", vocab])]
    new_outputs += [(f"{p}n", b, TensorProto.FLOAT, state) for p, (_, b) in zip(PART_NAMES, mapping.state)]
    before, after = [], []  # adapters: service inputs -> foreign inputs; foreign outputs -> service outputs
    for ours, theirs, _, _ in new_inputs:
        if ours == theirs:
            continue
        if ours == "tokens" and (mapping.time_first or _dtype(inputs[theirs]) == "int32"):
            cast = _dtype(inputs[theirs]) == "int32"
            moved = "tokens__time_first" if cast else theirs
            if mapping.time_first:
                before.append(helper.make_node("Transpose", ["tokens"], [moved], perm=[1, 0]))
            if cast:
                before.append(helper.make_node("Cast", [moved if mapping.time_first else "tokens"], [theirs],
                                               to=TensorProto.INT32))
        else:
            before.append(helper.make_node("Identity", [ours], [theirs]))
    for ours, theirs, _, _ in new_outputs:
        if ours == theirs:
            continue
        if ours == "logits" and mapping.time_first:
            after.append(helper.make_node("Transpose", [theirs], [ours], perm=[1, 0, 2]))
        else:
            after.append(helper.make_node("Identity", [theirs], [ours]))
    # Only the mapped outputs are kept: extra ones (per-step states, attention) the service never reads.
    wrapped = helper.make_graph(
        before + list(graph.node) + after,
        graph.name or "foreign",
        [helper.make_tensor_value_info(o, t, s) for o, _, t, s in new_inputs],
        [helper.make_tensor_value_info(o, t, s) for o, _, t, s in new_outputs],
        initializer=list(graph.initializer),
        value_info=list(graph.value_info),
    )
    out = helper.make_model(wrapped, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                            producer_name="lstm_service.export onnx")
    out.functions.extend(model.functions)
    return out


def import_onnx(source: Path, mapping: Mapping, target: Path) -> Tuple[int, int, int, int]:
    """Write the wrapped model to ``target``; (layers, hidden, vocab size, opset)."""
    import onnx

    if not Path(source).is_file():
        raise ExportError(f"--onnx {source} does not exist or is not a file")
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ExportError(f"{source}: not an ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node:
        raise ExportError(f"{source}: not an ONNX model (no graph)")
    layers, hidden, vocab = check_mapping(model, mapping)
    wrapped = wrap(model, mapping, layers, hidden, vocab if vocab is not None else "vocab")
    onnx.save(wrapped, str(target))
    if vocab is None:  # a dynamic vocabulary axis: ask the graph once
        import numpy as np

        from .parity import ort_session

        feeds = {"tokens": np.zeros((1, 1), np.int64),
                 **{f"{p}0": np.zeros((layers, 1, hidden), np.float32) for p, _ in zip(PART_NAMES, mapping.state)}}
        vocab = int(ort_session(target).run(["logits"], feeds)[0].shape[-1])
        wrapped = wrap(model, mapping, layers, hidden, vocab)
        onnx.save(wrapped, str(target))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return layers, hidden, int(vocab), int(opset)
