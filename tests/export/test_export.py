"""Every cell kind exports to ONNX that reproduces torch, with B and T free."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from lstm_service.export.onnx import TOLERANCE, parity_errors
from lstm_service.model.card import ModelCardError, load_card, sha256_of
from lstm_service.model.checkpoint import load_model

CELLS = ["lstm", "peephole", "coupled", "gru", "rnn"]


@pytest.mark.parametrize("cell", CELLS)
def test_onnx_matches_torch_on_shapes_other_than_the_example(make_tiny_model, cell):
    directory = make_tiny_model(cell)
    model = load_model(directory.parent / "checkpoint")
    errors = parity_errors(model, directory / "model.onnx", seed=7)
    assert errors["torch_vs_onnxruntime"] <= TOLERANCE
    assert errors["stepwise_vs_whole"] <= TOLERANCE


@pytest.mark.parametrize("cell", CELLS)
def test_signature_and_card(make_tiny_model, cell):
    directory = make_tiny_model(cell)
    card = load_card(directory)
    graph = onnx.load(str(card.verify("fp32"))).graph
    has_c = cell in ("lstm", "peephole", "coupled")
    assert card.has_cell_state is has_c
    assert [i.name for i in graph.input] == (["tokens", "h0", "c0"] if has_c else ["tokens", "h0"])
    assert [o.name for o in graph.output] == (["logits", "hn", "cn"] if has_c else ["logits", "hn"])
    tokens_dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert tokens_dims == ["batch", "time"]  # both axes dynamic
    assert [s["name"] for s in card.inputs] == [i.name for i in graph.input]
    assert card.verify("int8").name == "model.int8.onnx"


def test_native_recurrent_operators_for_the_fast_path(make_tiny_model):
    ops = {c: {n.op_type for n in onnx.load(str(make_tiny_model(c) / "model.onnx")).graph.node}
           for c in ("lstm", "gru", "rnn", "peephole")}
    assert "LSTM" in ops["lstm"] and "GRU" in ops["gru"] and "RNN" in ops["rnn"]
    assert "Loop" in ops["peephole"]  # the variants keep a dynamic time loop


def test_int8_is_smaller_and_close(make_tiny_model):
    directory = make_tiny_model("lstm")
    card = load_card(directory)
    assert card.precisions["int8"]["bytes"] < card.precisions["fp32"]["bytes"]
    model = load_model(directory.parent / "checkpoint")
    errors = parity_errors(model, directory / "model.int8.onnx")
    # Activations are quantized per call with that call's own range, so int8
    # results depend (slightly) on what else is in the call: not bit-stable
    # across batch shapes, but close to the fp32 model everywhere.
    assert errors["torch_vs_onnxruntime"] < 0.25
    assert errors["stepwise_vs_whole"] < 0.25


def test_card_refuses_a_file_that_changed(make_tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(make_tiny_model("gru"), copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelCardError, match="sha256"):
        load_card(copy).verify("fp32")
    with pytest.raises(ModelCardError, match="no 'fp16'"):
        load_card(copy).onnx_path("fp16")
    (copy / "model.json").write_text("{}")
    with pytest.raises(ModelCardError, match="format"):
        load_card(copy)


def test_export_cli_measures_validation_through_onnxruntime(make_tiny_model, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    out = tmp_path / "exported"
    result = subprocess.run(
        [sys.executable, "-m", "export", "--checkpoint", str(make_tiny_model("lstm").parent / "checkpoint"),
         "--out", str(out), "--quantize", "int8", "--data", str(text), "--name", "fox"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "model.json").read_text())
    assert card["name"] == "fox" and card["validation"]["data"] == "text.txt"
    for precision in ("fp32", "int8"):
        entry = card["precisions"][precision]
        assert entry["sha256"] == sha256_of(out / entry["file"])
        assert 0 < entry["validation_loss"] < 20
    assert abs(card["precisions"]["int8"]["validation_loss"] - card["precisions"]["fp32"]["validation_loss"]) < 0.5


def test_export_cli_bad_checkpoint_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "export", "--checkpoint", str(tmp_path), "--out",
                             str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "config.json is missing" in result.stderr


def test_onnx_runs_large_batches(make_tiny_model):
    import onnxruntime as ort

    session = ort.InferenceSession(str(make_tiny_model("lstm") / "model.onnx"), providers=["CPUExecutionProvider"])
    h = np.zeros((2, 64, 32), np.float32)
    logits, hn, cn = session.run(None, {"tokens": np.zeros((64, 3), np.int64), "h0": h, "c0": h})
    assert logits.shape == (64, 3, 256) and hn.shape == (2, 64, 32)
