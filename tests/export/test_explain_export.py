"""model.explain.onnx: the same model as model.onnx, with gates, c and h per
layer and token that obey the cell equations (checked here from the returned
tensors alone, not from the code that made them)."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from lstm_service.export.explain import add_to_model_dir
from lstm_service.model.card import load_card
from lstm_service.model.cells import CELLS as CELL_CLASSES
from lstm_service.model.checkpoint import load_model
from lstm_service.model.explain import TRACERS

CELLS = ["lstm", "peephole", "coupled", "gru", "rnn"]
EQUATION_TOLERANCE = 1e-5


def _session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(directory, tokens, seed=3):
    """(card, start state h, c, explain outputs by name, model.onnx outputs by name)."""
    card = load_card(directory)
    layers, hidden = card.layers, card.hidden_size
    rng = np.random.default_rng(seed)
    shape = (layers, tokens.shape[0], hidden)
    h = rng.normal(0, 0.5, size=shape).astype(np.float32)
    c = rng.normal(0, 0.5, size=shape).astype(np.float32)
    feeds = {"tokens": tokens, "h0": h, **({"c0": c} if card.has_cell_state else {})}
    explain = _session(card.verify_explain())
    fast = _session(card.verify("fp32"))
    got = dict(zip([o.name for o in explain.get_outputs()], explain.run(None, feeds)))
    want = dict(zip([o.name for o in fast.get_outputs()], fast.run(None, feeds)))
    return card, h, c, got, want


@pytest.mark.parametrize("cell", CELLS)
def test_same_logits_and_final_state_as_model_onnx(make_tiny_model, cell):
    tokens = np.random.default_rng(1).integers(0, 256, size=(3, 11), dtype=np.int64)
    card, _, _, got, want = _run(make_tiny_model(cell), tokens)
    assert set(want) < set(got) and "trace" in got
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=1e-4, err_msg=name)
    channels = card.explain["channels"]
    assert got["trace"].shape == (card.layers, 3, 11, len(channels), card.hidden_size)
    assert card.explain["parity"]["explain_vs_model_onnx"] <= 1e-4


def _lstm_like_checks(trace, channels, h0, c0, cell):
    i, f, g, o, c, h = (trace[:, :, :, channels.index(n)] for n in ("input", "forget", "candidate", "output", "c", "h"))
    c_prev = np.concatenate([c0[:, :, None], c[:, :, :-1]], axis=2)  # [L,B,T,H]
    np.testing.assert_allclose(c, f * c_prev + i * g, atol=EQUATION_TOLERANCE)
    np.testing.assert_allclose(h, o * np.tanh(c), atol=EQUATION_TOLERANCE)
    for gate in (i, f, o):
        assert ((gate > 0) & (gate < 1)).all()
    if cell == "coupled":
        np.testing.assert_allclose(i, 1 - f, atol=EQUATION_TOLERANCE)


def _gru_checks(trace, channels, h0):
    r, z, n, h = (trace[:, :, :, channels.index(x)] for x in ("reset", "update", "candidate", "h"))
    h_prev = np.concatenate([h0[:, :, None], h[:, :, :-1]], axis=2)
    np.testing.assert_allclose(h, (1 - z) * n + z * h_prev, atol=EQUATION_TOLERANCE)
    assert ((r > 0) & (r < 1)).all() and ((z > 0) & (z < 1)).all()


def _rnn_checks(trace, model, tokens, h0):
    """h_t = tanh(W x_t + b + U h_{t-1} + b'), with the checkpoint's weights."""
    x = model.embedding.weight.detach().numpy()[tokens]  # [B,T,E]
    for layer in range(trace.shape[0]):
        rnn = model.recurrent.rnn
        w, u = (getattr(rnn, f"{n}_l{layer}").detach().numpy() for n in ("weight_ih", "weight_hh"))
        b = sum(getattr(rnn, f"{n}_l{layer}").detach().numpy() for n in ("bias_ih", "bias_hh"))
        h = trace[layer, :, :, 0]
        h_prev = np.concatenate([h0[layer][:, None], h[:, :-1]], axis=1)
        np.testing.assert_allclose(h, np.tanh(x @ w.T + h_prev @ u.T + b), atol=EQUATION_TOLERANCE)
        x = h


@pytest.mark.parametrize("cell", CELLS)
def test_cell_equations_hold_on_the_returned_tensors(make_tiny_model, cell):
    directory = make_tiny_model(cell)
    tokens = np.random.default_rng(2).integers(0, 256, size=(2, 9), dtype=np.int64)
    card, h0, c0, got, _ = _run(directory, tokens)
    trace, channels = got["trace"], card.explain["channels"]
    model = load_model(directory.parent / "checkpoint")
    if cell in ("lstm", "peephole", "coupled"):
        _lstm_like_checks(trace, channels, h0, c0, cell)
        np.testing.assert_allclose(trace[:, :, -1, channels.index("c")], got["cn"], atol=EQUATION_TOLERANCE)
    elif cell == "gru":
        _gru_checks(trace, channels, h0)
    else:
        _rnn_checks(trace, model, tokens, h0)
    h = trace[:, :, :, channels.index("h")]
    np.testing.assert_allclose(h[:, :, -1], got["hn"], atol=EQUATION_TOLERANCE)
    # The trace's top-layer h is what the head reads: it gives the logits.
    head = model.head
    logits = h[-1] @ head.weight.detach().numpy().T + head.bias.detach().numpy()
    np.testing.assert_allclose(logits, got["logits"], atol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_each_tracer_is_its_cell(cell):
    """The tracers of model/explain.py step exactly like model/cells.py's cells."""
    torch.manual_seed(0)
    cell_module = CELL_CLASSES[cell](8, 16)
    with torch.no_grad():
        for p in cell_module.parameters():
            p.normal_(0, 0.5)
    x, h, c = torch.randn(4, 8), torch.randn(4, 16), torch.randn(4, 16)
    with torch.no_grad():
        want_h, want_c = cell_module(x, h, c)
        got_h, got_c, _ = TRACERS[cell](cell_module)(x, h, c)
    torch.testing.assert_close(got_h, want_h, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_c, want_c, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_explain_added_to_a_model_shipped_without_checkpoint(make_tiny_model, tmp_path, cell):
    """The weights are read back out of model.onnx (gate blocks reordered) and checked against it."""
    entry = add_to_model_dir(make_tiny_model(cell), tmp_path / "copy")
    assert entry["parity"]["explain_vs_model_onnx"] <= 1e-4
    assert load_card(tmp_path / "copy").verify_explain().is_file()
