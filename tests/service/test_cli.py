"""`python -m lstm_service` as a user runs it: a real process, a real port,
SIGTERM at the end. (lstm-client and the Python client: tests/client/.)"""
import os
import subprocess
import sys
import time
from pathlib import Path

from lstm_client import Client
from tools.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_drains_and_exits_zero(tiny_model_dir):
    process = ServerProcess(["--model", str(tiny_model_dir), "--device", "cpu", "--grace", "5"])
    with Client(process.target) as client:
        client.create_session("x")
    began = time.monotonic()
    assert process.stop() == 0
    assert time.monotonic() - began < 5
    log = process.output
    assert "stop_requested by=signal signal=SIGTERM" in log and " draining " in log and " stopped" in log
    assert "providers=CPUExecutionProvider" in log and "session_open" in log


def test_help_and_bad_config_exit_cleanly():
    env = dict(os.environ, LSTM_DEVICE="tpu")
    out = subprocess.run([sys.executable, "-m", "lstm_service"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "device must be auto, cpu or cuda" in out.stderr
    helped = subprocess.run([sys.executable, "-m", "lstm_service", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert helped.returncode == 0 and "LSTM_MAX_SESSIONS" in helped.stdout and "--max-batch-delay-ms" in helped.stdout
    missing = subprocess.run([sys.executable, "-m", "lstm_service", "--model", "/nonexistent", "--device", "cpu"],
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "model.json is missing" in missing.stderr


def test_a_bad_model_directory_is_one_line_in_either_mode():
    """The supervisor checks the model before it starts children (each would say it again)."""
    for mode in ([], ["--fronts", "0"]):
        out = subprocess.run([sys.executable, "-m", "lstm_service", "--model", "/nonexistent", "--port", "0", *mode],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        errors = [line for line in out.stderr.splitlines() if " ERROR " in line]
        assert out.returncode == 2 and len(errors) == 1, out.stderr
        assert "model.json is missing" in errors[0] and "supervising" not in out.stderr


def test_usage_errors_name_the_command_as_it_was_run():
    lstm_serve = Path(sys.executable).with_name("lstm-serve")
    out = subprocess.run([str(lstm_serve), "--bogus"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "lstm-serve: error: unrecognized arguments: --bogus" in out.stderr
    assert "python -m" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "lstm_service", "--bogus"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "python -m lstm_service: error: unrecognized arguments: --bogus" in out.stderr


def test_a_front_logs_who_asked_it_to_stop(tiny_model_dir):
    process = ServerProcess(["--model", str(tiny_model_dir), "--device", "cpu", "--fronts", "1", "--grace", "1"])
    assert process.stop() == 0
    log = process.output
    assert "service.supervisor stop_requested by=signal signal=SIGTERM" in log
    assert "service stop_requested by=supervisor signal=SIGUSR1" in log and "service signal " not in log


def test_main_refuses_bad_settings_before_it_starts_anything(capsys):
    """The entry point itself, in process: bad settings are exit status 2 and one line, and the
    default mode checks the model before a single child exists."""
    import logging

    from lstm_service.service.proc.main import main

    handlers = logging.getLogger().handlers[:]
    try:
        assert main(["--device", "tpu"]) == 2
        assert "error: device must be auto, cpu or cuda, got 'tpu'" in capsys.readouterr().err
        assert main(["--model", "/nonexistent", "--port", "0", "--fronts", "2"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "startup_failed" in err and "model.json is missing" in err
    finally:
        logging.getLogger().handlers[:] = handlers
