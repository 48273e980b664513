"""Serve your own model, refused: what does not fit the conventions gets one line saying
what was expected, exit status 2, and no model.json."""
from __future__ import annotations

import pytest

from own_models import (EXAMPLE, USER_MODULES, WORDS, example_class, export, randomize, save_user_model,
                        write_foreign_onnx)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def lstm_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    kwargs = dict(rnn_type="LSTM", ntoken=len(WORDS), ninp=8, nhid=8, nlayers=1, dropout=0.0)
    module = randomize(example_class()(**kwargs), seed=1)
    files = save_user_model(root, module, kwargs)
    write_foreign_onnx(root / "foreign.onnx", module)
    files["onnx"] = root / "foreign.onnx"
    return files


def test_a_module_whose_forward_does_not_match_is_refused(tmp_path, capsys):
    from user_modules import ForwardWithoutHidden

    kwargs = dict(vocab=len(WORDS), size=8)
    files = save_user_model(tmp_path / "user", randomize(ForwardWithoutHidden(**kwargs), 0), kwargs)
    assert export("torch", "--module", f"{USER_MODULES}:ForwardWithoutHidden", "--kwargs", files["kwargs"],
                  "--checkpoint", files["checkpoint"], "--vocab", files["vocab"], "--out", tmp_path / "m") == 2
    line = one_error_line(capsys)
    assert "ForwardWithoutHidden.forward failed" in line
    assert "the wrapper expected forward(input [T,B] int64, hidden) -> (logits [T,B,V] or [T*B,V], hidden)" in line
    assert not (tmp_path / "m" / "model.json").exists()


def test_a_batch_first_module_exported_as_sequence_first_is_refused(lstm_files, tmp_path, capsys):
    assert export("torch", "--module", f"{EXAMPLE}:RNNModel", "--kwargs", lstm_files["kwargs"], "--checkpoint",
                  lstm_files["checkpoint"], "--vocab", lstm_files["vocab"], "--batch-first",
                  "--out", tmp_path / "m") == 2
    assert "the wrapper expected (--batch-first) forward(input [B,T] int64, hidden)" in one_error_line(capsys)


def test_a_vocabulary_smaller_than_the_head_is_refused(lstm_files, tmp_path, capsys):
    small = tmp_path / "small.txt"
    small.write_text("\n".join(WORDS[:20]) + "\n")
    assert export("torch", "--module", f"{EXAMPLE}:RNNModel", "--kwargs", lstm_files["kwargs"], "--checkpoint",
                  lstm_files["checkpoint"], "--vocab", small, "--out", tmp_path / "m") == 2
    line = one_error_line(capsys)
    assert f"the vocabulary has 20 tokens, smaller than the model's head of {len(WORDS)}" in line
    assert not (tmp_path / "m" / "model.json").exists()
    assert export("onnx", "--onnx", lstm_files["onnx"], "--tokens", "input_ids", "--state", "h_in=h_out,c_in=c_out",
                  "--logits", "scores", "--time-first", "--vocab", small, "--out", tmp_path / "o") == 2
    assert f"the vocabulary has 20 tokens, smaller than the model's head of {len(WORDS)}" in one_error_line(capsys)


@pytest.mark.parametrize("flags, expected", [
    (["--tokens", "tokens", "--state", "h_in=h_out,c_in=c_out", "--logits", "scores"],
     "--tokens names the token input 'tokens', which is not one of the graph's inputs: c_in, h_in, input_ids"),
    (["--tokens", "input_ids", "--state", "h_in=h_out,c_in=cn", "--logits", "scores"],
     "--state names the c state output 'cn', which is not one of the graph's outputs: c_out, h_out, scores"),
    (["--tokens", "input_ids", "--state", "h_in=h_out", "--logits", "scores"],
     "the graph's inputs ['c_in'] are not in the mapping"),
    (["--tokens", "h_in", "--state", "input_ids=h_out,c_in=c_out", "--logits", "scores"],
     "--tokens 'h_in' is float [1, 'B', 8]; expected int64 or int32 of rank 2 ([T,B])"),
])
def test_a_mapping_that_does_not_fit_the_graph_is_refused(lstm_files, tmp_path, capsys, flags, expected):
    assert export("onnx", "--onnx", lstm_files["onnx"], *flags, "--time-first", "--vocab", lstm_files["vocab"],
                  "--out", tmp_path / "o") == 2
    line = one_error_line(capsys)
    assert expected in line
    assert not (tmp_path / "o" / "model.json").exists()


def test_a_mapping_file_does_what_the_flags_do(lstm_files, tmp_path, capsys):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("tokens: input_ids\nlogits: scores\nstate:\n  h_in: h_out\n  c_in: c_out\ntime_first: true\n")
    assert export("onnx", "--onnx", lstm_files["onnx"], "--mapping", mapping, "--vocab", lstm_files["vocab"],
                  "--out", tmp_path / "o") == 0
    assert (tmp_path / "o" / "model.json").exists()
