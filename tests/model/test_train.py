"""Training on a tiny synthetic text: the loss falls, checkpoints load, bad input is one clear line."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lstm_service.model.checkpoint import load_model
from lstm_service.model.train import Run, _step, main, parse_args

SMALL = ["--embed", "8", "--hidden", "32", "--layers", "1", "--batch-size", "4", "--seq-len", "16",
         "--no-progress", "--threads", "1"]


@pytest.fixture
def pattern_text(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_text("abcdefgh " * 400)
    return path


def test_loss_falls_and_checkpoint_round_trips(tmp_path, pattern_text, capsys):
    out = tmp_path / "run"
    code = main(["--data", str(pattern_text), "--out", str(out), "--epochs", "6", "--eval-every", "1000",
                 "--lr", "1e-2", "--warmup", "5", *SMALL])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # A repeating 9-symbol pattern: uniform is ln(256) = 5.5 nats; learnt, near 0.
    assert metrics["best_validation_loss"] < 1.0
    model = load_model(out)
    assert model.config.hidden_size == 32
    assert set(p.name for p in out.iterdir()) >= {"config.json", "model.pt", "metrics.json", "trainer.pt"}
    # Resume continues from the saved step count and still trains.
    assert main(["--data", str(pattern_text), "--out", str(out), "--epochs", "7", "--resume",
                 "--eval-every", "1000", *SMALL]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["step"] > metrics["step"]


@pytest.mark.parametrize("cell", ["peephole", "coupled", "gru", "rnn"])
def test_every_cell_kind_trains(tmp_path, pattern_text, cell, capsys):
    assert main(["--data", str(pattern_text), "--out", str(tmp_path / cell), "--cell", cell,
                 "--epochs", "1", "--eval-every", "1000", *SMALL]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] > 0


@pytest.mark.parametrize(
    "content, message",
    [(None, "does not exist"), (b"", "at least 20"), (b"x" * 30, "too short")],
)
def test_bad_input_ends_with_one_clear_line(tmp_path, content, message):
    data = tmp_path / "data.txt"
    if content is not None:
        data.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "lstm_service.model.train", "--data", str(data), "--out", str(tmp_path / "o"), *SMALL],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, pattern_text, capsys):
    assert main(["--data", str(pattern_text), "--out", str(tmp_path / "none"), "--resume", *SMALL]) == 2
    assert "--resume" in capsys.readouterr().err


def test_sample_cli_generates_text(tmp_path, pattern_text):
    out = tmp_path / "run"
    assert main(["--data", str(pattern_text), "--out", str(out), "--epochs", "1", "--eval-every", "1000",
                 *SMALL]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "lstm_service.model.sample", "--checkpoint", str(out), "--prompt", "abc", "-n", "20",
         "--seed", "1"], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("abc") and len(result.stdout.encode()) >= 20


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole"])
def test_bf16_autocast_learns_and_saves_fp32_weights(tmp_path, pattern_text, cell, capsys):
    out = tmp_path / "bf16"
    assert main(["--data", str(pattern_text), "--out", str(out), "--cell", cell, "--bf16", "--epochs", "6",
                 "--eval-every", "1000", "--lr", "1e-2", "--warmup", "5", "--locked-dropout", "--weight-drop", "0.1",
                 *SMALL]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["best_validation_loss"] < 1.0  # the pattern is learnt in bfloat16 too
    model = load_model(out)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert json.loads((out / "metrics.json").read_text())["recipe"]["bf16"] is True


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_runs_the_training_step_in_bfloat16(tmp_path, pattern_text, bf16):
    args = parse_args(["--data", str(pattern_text), "--out", str(tmp_path), *SMALL] + (["--bf16"] if bf16 else []))
    run = Run(args)
    seen = []
    run.model.head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    tokens = np.arange(4 * 17, dtype=np.int64).reshape(4, 17) % 9
    h, c = run.model.initial_state(4)
    _, h, c = _step(run, tokens[:, :-1], tokens[:, 1:], h, c, lr=1e-3)
    assert seen == [torch.bfloat16 if bf16 else torch.float32]
    assert h.dtype == c.dtype == torch.float32  # the carried state is fp32 between chunks


@pytest.mark.parametrize("native", [True, False])
def test_bf16_warns_only_where_the_cpu_has_no_bf16_instructions(tmp_path, pattern_text, capsys, monkeypatch, native):
    import lstm_service.model.train as train

    monkeypatch.setattr(train, "native_bf16", lambda: native)
    assert main(["--data", str(pattern_text), "--out", str(tmp_path / "run"), "--bf16", "--epochs", "0.1",
                 *SMALL]) == 0
    warned = "--bf16 on a CPU without bf16 instructions" in capsys.readouterr().err
    assert warned is not native


def test_step_speed_times_both_precisions(pattern_text, capsys):
    from lstm_service.model.step_speed import main as step_speed

    assert step_speed(["--data", str(pattern_text), "--steps", "2", "--locked-dropout", *SMALL]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("lstm 1x32, 4x16 per step, 1 threads, median of 2 steps")
    assert [line.split(":")[0] for line in lines[1:]] == ["fp32", "bf16", "bf16 / fp32 tokens/s"]
    assert step_speed(["--data", str(pattern_text), "--steps", "0"]) == 2
