"""The training-only regularisers: what each one drops, that eval mode is the plain model, that the
stored weights and the checkpoint format are untouched, and the weight average."""
import json

import pytest
import torch

from lstm_service.export.onnx import TOLERANCE, parity_errors
from lstm_service.model.averaging import WeightAverage
from lstm_service.model.checkpoint import load_model
from lstm_service.model.config import ModelConfig
from lstm_service.model.lm import LanguageModel
from lstm_service.model.regularize import (Regularization, RegularizedForward, embedding_dropout,
                                           locked_dropout)
from lstm_service.model.train import main

STRONG = Regularization(input_dropout=0.3, hidden_dropout=0.3, output_dropout=0.3, weight_drop=0.5,
                        embed_dropout=0.2)


def tiny(cell="lstm", layers=2):
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(cell=cell, embed_size=6, hidden_size=10, layers=layers, dropout=0.3))


def run(forward, model, batch=3, steps=7, seed=1):
    torch.manual_seed(seed)
    tokens = torch.randint(0, 256, (batch, steps))
    h, c = model.initial_state(batch)
    return forward(tokens, h + 0.1, c - 0.1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "peephole", "coupled"])
def test_eval_mode_is_exactly_the_plain_model(cell):
    model = tiny(cell).eval()
    reg = RegularizedForward(model, STRONG).eval()
    for ours, plain in zip(run(reg, model), run(model, model)):
        assert torch.allclose(ours, plain, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_training_mode_regularises_and_leaves_the_stored_weights_alone(cell):
    model = tiny(cell)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reg = RegularizedForward(model, STRONG).train()
    first, second = run(reg, model, seed=1)[0], run(reg, model, seed=2)[0]
    plain = run(model.eval(), model, seed=1)[0]
    assert not torch.allclose(first, plain)  # masks are on while training
    first.sum().backward()
    hh = "recurrent.rnn.weight_hh_l1" if cell == "lstm" else "recurrent.cells.1.weight_hh"
    assert dict(model.named_parameters())[hh].grad.abs().sum() > 0  # the dropped weight still learns
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert list(reg.state_dict()) == ["lm." + k for k in before]  # no parameters of its own
    assert second.shape == first.shape


def test_weight_drop_alone_changes_only_the_recurrence():
    model = tiny()
    reg = RegularizedForward(model, Regularization(weight_drop=0.5)).train()
    tokens = torch.randint(0, 256, (2, 5))
    h, c = model.initial_state(2)
    # From a zero state the first step never multiplies W_hh: it matches the plain model.
    ours, plain = reg(tokens, h, c)[0], model.eval()(tokens, h, c)[0]
    assert torch.allclose(ours[:, 0], plain[:, 0], atol=1e-6)
    assert not torch.allclose(ours[:, 1:], plain[:, 1:])


def test_locked_dropout_shares_one_mask_over_time():
    x = torch.ones(4, 50, 32)
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:, :1].expand_as(y))  # same mask at every step
    assert set(y.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1/(1-p)
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_embedding_dropout_drops_whole_bytes():
    torch.manual_seed(3)
    table = torch.nn.Embedding(256, 8)
    tokens = torch.arange(256).repeat(2, 1)
    out = embedding_dropout(table, tokens, 0.5, training=True)
    dropped = (out == 0).all(-1)
    assert 0 < dropped[0].sum() < 256
    assert torch.equal(dropped[0], dropped[1])  # a dropped byte is dropped wherever it occurs
    kept = ~dropped[0]
    assert torch.allclose(out[0, kept], table.weight[kept] * 2)
    assert torch.equal(embedding_dropout(table, tokens, 0.5, training=False), table(tokens))


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="weight-drop"):
        Regularization(weight_drop=1.0)


def test_weight_average_follows_the_formula_and_swaps_back():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(10.0)
    ema.update(model)  # d = min(0.5, 1/10) = 0.1: 0.1*0 + 0.9*10
    assert torch.allclose(ema.average["weight"], torch.full((1, 2), 9.0))
    with ema.swapped_in(model):
        assert torch.allclose(model.weight, torch.full((1, 2), 9.0))
    assert torch.allclose(model.weight, torch.full((1, 2), 10.0))
    restored = WeightAverage(model, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 1 and restored.decay == 0.5


def test_regularised_run_saves_a_plain_checkpoint_that_exports_with_parity(tmp_path, capsys):
    text = tmp_path / "abc.txt"
    text.write_text("abcdefgh " * 400)
    out = tmp_path / "run"
    base = ["--data", str(text), "--out", str(out), "--embed", "8", "--hidden", "32", "--layers", "2",
            "--batch-size", "4", "--seq-len", "16", "--no-progress", "--threads", "1", "--eval-every", "1000",
            "--lr", "1e-2", "--warmup", "5"]
    regularise = ["--dropout", "0.2", "--locked-dropout", "--input-dropout", "0.1", "--weight-drop", "0.2",
                  "--embed-dropout", "0.05", "--ema", "0.9"]
    assert main(base + regularise + ["--epochs", "6"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["best_validation_loss"] < 1.0  # still learns the pattern
    assert set(json.loads((out / "config.json").read_text())) == set(ModelConfig().to_dict())
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert curve[-1]["step"] == curve[-2]["step"] == metrics["step"]
    # With --ema the average is validated, then at the end the last weights too; the better is saved.
    assert [row["weights"] for row in curve[-2:]] == ["average", "last"]
    saved = json.loads((out / "metrics.json").read_text())
    assert abs(saved["validation_loss"] - min(row["validation_loss"] for row in curve)) <= 1e-5
    assert saved["recipe"]["weight_drop"] == 0.2
    # Resume restores the weight average and the clock, and keeps training.
    assert main(base + regularise + ["--epochs", "7", "--resume"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["step"] > metrics["step"] and resumed["train_seconds"] >= metrics["train_seconds"]
    model = load_model(out)
    from lstm_service.export.onnx import export_onnx

    export_onnx(model, tmp_path / "m.onnx")
    errors = parity_errors(model, tmp_path / "m.onnx", seed=3)
    assert errors["torch_vs_onnxruntime"] <= TOLERANCE and errors["stepwise_vs_whole"] <= TOLERANCE
