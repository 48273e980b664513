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
    assert "signal signal=SIGTERM" in log and " draining " in log and " stopped" in log
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
