"""``lstm-client explain "TEXT" --out gates.png``: a picture of the cell at work.

The text runs along the x axis. Above: heat maps of the chosen gates over
the units that vary most on this text, and the layer's per-token summaries
(mean forget and input gate, |change of the cell state|), and h. Below: for each
property of the text (inside quotes, position in the line, right after a
newline) the unit whose activation follows it most closely (largest |Pearson
r|), each character coloured by that unit: the view of Karpathy, Johnson and
Fei-Fei, "Visualizing and Understanding Recurrent Networks" (2015).

Needs matplotlib: ``pip install 'lstm-client[plot]'`` (not a serving dependency).
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Sequence, Tuple

from .proto.lstm.v1 import lstm_pb2 as pb

DEFAULT_GATES = ("forget", "input", "output")
GRU_GATES = ("update", "reset")
MAX_CHARS_PER_ROW = 110


def text_properties(text: str) -> Dict[str, List[float]]:
    """Per byte of ``text``: inside double quotes (0/1), position in the line, right after a newline (0/1)."""
    quoted, position, after_newline = [], [], []
    inside, column, previous = False, 0, ""
    for char in text:
        for _ in char.encode("utf-8"):  # one token per byte
            quoted.append(float(inside or char == '"'))
            position.append(float(column))
            after_newline.append(float(previous == "\n"))
        if char == '"':
            inside = not inside
        column = 0 if char == "\n" else column + 1
        previous = char
    return {"inside quotes": quoted, "position in line": position, "after a newline": after_newline}


def best_unit(values, prop: Sequence[float]) -> Optional[Tuple[int, float]]:
    """(unit, r) of the unit (column of values [T, H]) most correlated with ``prop``; None if prop is constant."""
    import numpy as np

    p = np.asarray(prop, dtype=np.float64)
    if p.std() == 0:
        return None
    v = values - values.mean(0)
    denominator = np.sqrt((v ** 2).sum(0) * ((p - p.mean()) ** 2).sum()) + 1e-12
    r = (v * (p - p.mean())[:, None]).sum(0) / denominator
    unit = int(np.argmax(np.abs(r)))
    return unit, float(r[unit])


def channel_matrix(layer: pb.ExplainLayer, name: str, tokens: int):
    import numpy as np

    channel = next(c for c in layer.channels if c.name == name)
    return list(channel.units), np.array(channel.values, dtype=np.float32).reshape(tokens, len(channel.units))


def fetch(client, text: str, layer: Optional[int], gates: Sequence[str], top_units: int, session_id: str = ""):
    """Two Explain calls: the gates' most varying units, and the state channel's every unit (for correlations)."""
    model = client.models()[0]
    chosen = model.layers - 1 if layer is None else layer
    state = "c" if model.has_cell_state else "h"
    if not gates:
        gates = DEFAULT_GATES if model.has_cell_state else (GRU_GATES if model.cell == "gru" else ())
    heat = client.stub.Explain(pb.ExplainRequest(  # h, not c, in the heat maps: bounded, so comparable
        session_id=session_id, input=pb.Input(text=text), layers=[chosen], channels=list(gates) + ["h"],
        top_units=min(top_units, model.hidden_size), top_k=1), timeout=client.timeout)
    full = client.stub.Explain(pb.ExplainRequest(
        session_id=session_id, input=pb.Input(text=text), layers=[chosen], channels=[state], top_k=0),
        timeout=client.timeout)
    return model, chosen, state, heat, full


def _labels(reply: pb.ExplainResponse) -> List[str]:
    return ["\u21b5" if t.text == "\n" else (t.text if t.text else "\u00b7") for t in reply.tokens]


def render(model, layer: int, state: str, heat: pb.ExplainResponse, full: pb.ExplainResponse, text: str, out: str):
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    labels, T = _labels(heat), len(heat.tokens)
    names = [c.name for c in heat.layers[0].channels]
    props = text_properties(text)
    states = np.tanh(channel_matrix(full.layers[0], state, T)[1])  # what h sees of c: bounded, comparable
    rows = len(names) + 1 + len(props)
    heights = [3] * len(names) + [1.6] + [0.55] * len(props)
    fig, axes = plt.subplots(rows, 1, figsize=(max(10.0, 0.14 * T + 2), sum(heights) * 0.75 + 1),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = axes[:, 0]
    fig.suptitle(f"{model.name}: layer {layer} of {model.cell} {model.layers}x{model.hidden_size}", fontsize=11)
    for ax, name in zip(axes, names):
        units, values = channel_matrix(heat.layers[0], name, T)
        gate = name not in ("c", "h", "candidate")
        image = ax.imshow(values.T, aspect="auto", interpolation="nearest",
                          cmap="viridis" if gate else "RdBu", vmin=0 if gate else -1, vmax=1)
        ax.set_yticks(range(len(units)), [str(u) for u in units], fontsize=5)
        ax.set_ylabel(f"{name}\nunit", fontsize=8)
        ax.set_xticks(range(T), labels, fontsize=6, family="monospace")
        fig.colorbar(image, ax=ax, fraction=0.015, pad=0.01)
    _summaries(axes[len(names)], heat.layers[0], labels)
    for ax, (prop, series) in zip(axes[len(names) + 1:], props.items()):
        _strip(ax, states, series, prop, labels, f"tanh({state})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _summaries(ax, layer: pb.ExplainLayer, labels: List[str]) -> None:
    x = range(len(labels))
    if len(layer.mean_forget):
        ax.plot(x, list(layer.mean_forget), label="mean forget", color="tab:blue")
        ax.plot(x, list(layer.mean_input), label="mean input", color="tab:orange")
    ax.set_ylim(0, 1)
    twin = ax.twinx()
    twin.plot(x, list(layer.state_change), label="|\u0394 state|", color="tab:gray", linestyle=":")
    twin.tick_params(labelsize=6)
    ax.set_xticks(range(len(labels)), labels, fontsize=6, family="monospace")
    ax.set_xlim(-0.5, len(labels) - 0.5)
    if len(layer.mean_forget):  # rnn: no gates to average
        ax.legend(loc="upper left", fontsize=6, ncol=2)
    twin.legend(loc="upper right", fontsize=6)


def _strip(ax, states, series, prop: str, labels: List[str], state: str) -> None:
    """One row: each character on the colour of the unit that follows ``prop`` best."""

    found = best_unit(states, series)
    ax.set_yticks([])
    ax.set_xticks([])
    if found is None:
        ax.set_title(f"{prop}: constant on this text, no unit to match", fontsize=7, loc="left")
        return
    unit, r = found
    values = states[:, unit][None, :]
    ax.imshow(values, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)  # red negative, blue positive, as on the page
    for t, label in enumerate(labels):
        ax.text(t, 0, label, ha="center", va="center", fontsize=7, family="monospace",
                color="white" if abs(values[0, t]) > 0.6 else "black")
    ax.set_title(f"{prop}: {state[:-1]}[{unit}]), r = {r:+.2f}", fontsize=7, loc="left")


def add_parser(sub) -> None:
    e = sub.add_parser("explain", help="picture of the gates and units on a text (PNG; needs lstm-client[plot])")
    e.add_argument("text", help="text to explain (\\n for a newline), at most 512 UTF-8 bytes")
    e.add_argument("--out", required=True, help="PNG file to write")
    e.add_argument("--layer", type=int, default=None, help="layer to show, counted from 0 (default: the top one)")
    e.add_argument("--gates", default="",
                   help="comma-separated channels (default: forget,input,output; gru: update,reset)")
    e.add_argument("--units", type=int, default=24, help="most varying units per gate to show (default 24)")
    e.add_argument("--session", default="", help="explain from this session's state (left unchanged)")


def cmd_explain(client, args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("the explain picture needs matplotlib: pip install 'lstm-client[plot]'") from None
    text = args.text.replace("\\n", "\n")
    gates = [g.strip() for g in args.gates.split(",") if g.strip()]
    model, layer, state, heat, full = fetch(client, text, args.layer, gates, args.units, args.session)
    render(model, layer, state, heat, full, text, args.out)
    print(f"wrote {args.out}: {len(heat.tokens)} tokens, layer {layer}")
    return 0
