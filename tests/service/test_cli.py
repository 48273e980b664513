"""`python -m lstm_service` and `lstm-client` as a user runs them: real
processes, a real port, SIGTERM at the end; and the Python client library."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from lstm_service.service.client import AsyncClient, Client
from svc_helpers import serving

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


def cli(target: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstm_service.service.client_cli", "--target", target, *args],
                          cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    process = ServerProcess(tiny_model_dir, "--log-format", "text")
    yield process
    if process.proc.poll() is None:
        process.proc.kill()


def test_cli_commands_against_a_real_server(server):
    out = cli(server.target, "generate", "ROMEO:", "-n", "20", "--seed", "3", "-v")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ROMEO:") and "finished: length; session steps 26" in out.stderr
    assert cli(server.target, "generate", "ROMEO:", "-n", "20", "--seed", "3").stdout == out.stdout

    models = cli(server.target, "models")
    assert models.returncode == 0 and "tiny-lstm: lstm 2x32" in models.stdout
    assert "CPUExecutionProvider" in models.stdout

    health = cli(server.target, "health")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")

    stream = cli(server.target, "stream", stdin="hello\n world\n")
    assert stream.returncode == 0, stream.stderr
    lines = stream.stdout.splitlines()
    assert lines[0].startswith("[5 tokens] next: ") and lines[1].startswith("[11 tokens] next: ")

    sessions = cli(server.target, "sessions")
    assert sessions.returncode == 0 and "session(s)" in sessions.stdout

    bad = cli(server.target, "generate", "x", "-n", "100000")
    assert bad.returncode == 1 and "INVALID_ARGUMENT: max_tokens 100000 is out of range" in bad.stderr
    down = cli("127.0.0.1:1", "--timeout", "2", "health")
    assert down.returncode == 1 and ("UNAVAILABLE" in down.stderr or "DEADLINE_EXCEEDED" in down.stderr)


def test_python_client_library(server):
    with Client(server.target) as client:
        created = client.create_session("To be", top_k=3)
        sid = created.session.id
        assert len(created.result.predictions[0].top) == 3
        assert client.predict(sid, ", or").steps == 9
        fork = client.fork_session(sid)
        assert fork.steps == 9 and fork.id != sid
        text = client.generate_text(session_id=sid, max_tokens=5, seed=1)
        assert client.get_session(sid).steps == 14 and isinstance(text, str)
        with client.stream() as stream:
            assert stream.send("abc").steps == 3
            assert stream.send(tokens=[100, 101]).steps == 5
            ephemeral = stream.session_id
        with pytest.raises(grpc.RpcError) as info:
            client.get_session(ephemeral)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND  # it ended with its stream
        with client.stream(sid) as stream:  # attach to a named session
            assert stream.send("!").steps == 15
        assert client.reset_session(sid).steps == 0
        assert client.delete_session(fork.id) == 9
        assert client.health() == "SERVING" and client.models()[0].name == "tiny-lstm"
        assert any(s.id == sid for s in client.list_sessions().sessions)


async def test_async_client_sends_the_session_header(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        seen = []
        original = s.app.servicer._session_id

        def spy(field, context, required=True):
            seen.append(dict(context.invocation_metadata()).get("x-session-id"))
            return original(field, context, required)

        s.app.servicer._session_id = spy
        async with AsyncClient(s.target) as client:
            created = await client.create_session("hi")
            sid = created.session.id
            assert (await client.predict(sid, "!")).steps == 3
            tokens = [r async for r in client.generate(session_id=sid, max_tokens=3, seed=2)]
            assert tokens[-1].steps == 6
            async with client.stream(sid) as stream:
                assert (await stream.send("x")).steps == 7
            assert (await client.get_session(sid)).steps == 7
            assert await client.delete_session(sid) == 7
        assert seen == [sid] * len(seen) and len(seen) == 6


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
