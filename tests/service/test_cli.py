"""`python -m lstm_service` as a user runs it: a real process, a real port,
SIGTERM at the end. (lstm-client and the Python client: tests/client/.)"""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lstm_client import Client

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    def __init__(self, model_dir: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "service", "--model", str(model_dir), "--port", "0", "--device", "cpu", *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.lines = []
        started = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                if " started " in line:
                    started.set()

        threading.Thread(target=read, daemon=True).start()
        if not started.wait(30):
            self.proc.kill()
            raise AssertionError("server did not start:\n" + "".join(self.lines))
        line = next(x for x in self.lines if " started " in x)
        self.target = re.search(r"address=(\S+)", line).group(1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


def test_sigterm_drains_and_exits_zero(tiny_model_dir):
    process = ServerProcess(tiny_model_dir, "--grace", "5")
    with Client(process.target) as client:
        client.create_session("x")
    began = time.monotonic()
    assert process.stop() == 0
    assert time.monotonic() - began < 5
    log = "".join(process.lines)
    assert "signal signal=SIGTERM" in log and " draining " in log and " stopped" in log
    assert "providers=CPUExecutionProvider" in log and "session_open" in log


def test_help_and_bad_config_exit_cleanly():
    env = dict(os.environ, LSTM_DEVICE="tpu")
    out = subprocess.run([sys.executable, "-m", "service"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "device must be auto, cpu or cuda" in out.stderr
    helped = subprocess.run([sys.executable, "-m", "service", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert helped.returncode == 0 and "LSTM_MAX_SESSIONS" in helped.stdout and "--max-batch-delay-ms" in helped.stdout
    missing = subprocess.run([sys.executable, "-m", "service", "--model", "/nonexistent", "--device", "cpu"],
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "model.json is missing" in missing.stderr
