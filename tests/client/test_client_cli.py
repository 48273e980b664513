"""``lstm-client`` as a user runs it: a real process against a real server.
Every error is one line on stderr and exit status 2."""
import subprocess
import sys

import pytest

from tools.server_process import ServerProcess


def cli(target: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstm_client", "--target", target, *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_commands_against_a_real_server(server):
    out = cli(server.target, "generate", "ROMEO:", "-n", "20", "--seed", "3", "-v")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ROMEO:") and "finished: length; session steps 26" in out.stderr
    assert cli(server.target, "generate", "ROMEO:", "-n", "20", "--seed", "3").stdout == out.stdout
    bare = cli(server.target, "generate", "ROMEO:", "-n", "20", "--seed", "3", "--no-echo")
    assert "ROMEO:" + bare.stdout == out.stdout

    models = cli(server.target, "models")
    assert models.returncode == 0 and "tiny-lstm: lstm 2x32" in models.stdout
    assert "CPUExecutionProvider" in models.stdout

    health = cli(server.target, "health")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")

    sessions = cli(server.target, "sessions", "--limit", "5")
    assert sessions.returncode == 0 and "session(s)" in sessions.stdout


def test_stream_feeds_each_line_with_its_newline_unless_told_not_to(server):
    fed = cli(server.target, "stream", stdin="hello\n world\n")
    assert fed.returncode == 0, fed.stderr
    lines = fed.stdout.splitlines()
    assert lines[0].startswith("[6 tokens] next: '") and lines[1].startswith("[13 tokens] next: ")
    bare = cli(server.target, "stream", "--no-newlines", stdin="hello\n world\n")
    assert [x.split("]")[0] for x in bare.stdout.splitlines()] == ["[5 tokens", "[11 tokens"]
    quiet = cli(server.target, "stream", "--top-k", "0", stdin="hello\n")
    assert quiet.stdout.splitlines() == ["[6 tokens]"]


def test_the_server_refusing_is_one_line_and_exit_2(server):
    bad = cli(server.target, "generate", "ROMEO:", "--session", "no-such-session-0000")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "NOT_FOUND" in bad.stderr
    assert bad.stdout == ""  # the prompt is echoed only once the server has accepted the call
    down = cli("127.0.0.1:1", "--timeout", "2", "health")
    assert down.returncode == 2 and down.stderr.count("\n") == 1
    assert "UNAVAILABLE" in down.stderr or "DEADLINE_EXCEEDED" in down.stderr


@pytest.mark.parametrize("args, says", [
    (["generate", "ROMEO:", "-n", "-5"], "argument -n: -5 is out of range; allowed: [1, inf]"),
    (["generate"], "generate: a prompt is required when generating without --session"),
    (["--target", "http://localhost:50051", "health"], "takes no http:// scheme; drop it, e.g. localhost:50051"),
    (["--target", "https://lstm.example:443", "health"], "drop it and add --tls (https:// means TLS)"),
    (["generate", "x", "--top-k", "-1"], "argument --top-k: -1 is out of range"),
    (["generate", "x", "--top-p", "0"], "argument --top-p: 0 is out of range; allowed: (0, 1]"),
    (["generate", "x", "--seed", "-3"], "argument --seed: -3 is out of range"),
    (["generate", "x", "-n", "many"], "argument -n: 'many' is not an integer"),
    (["sessions", "--limit", "-1"], "argument --limit: -1 is out of range; allowed: [0, 1000]"),
    (["stream", "--top-k", "-1"], "argument --top-k: -1 is out of range"),
    (["--target", "localhost:99999", "health"], "the port must be a number in 1-65535"),
    (["--timeout", "0", "health"], "argument --timeout: 0 is out of range"),
    (["--ca", "/nonexistent.pem", "health"], "No such file or directory"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_is_one_line_and_exit_2(args, says):
    out = subprocess.run([sys.executable, "-m", "lstm_client", *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr and out.stdout == ""


def test_generate_takes_its_bound_on_n_from_the_server(tiny_model_dir):
    """-n is checked against GetModel's max_generate_tokens (the server's --max-generate-tokens), one source."""
    small = ServerProcess(["--model", str(tiny_model_dir), "--device", "cpu", "--fronts", "0",
                           "--max-generate-tokens", "7"])
    try:
        refused = cli(small.target, "generate", "ROMEO:", "-n", "8")
        assert refused.returncode == 2 and refused.stdout == "" and refused.stderr.count("\n") == 1
        assert "-n 8 is out of range: this server allows 1 to 7 tokens per call" in refused.stderr
        assert cli(small.target, "generate", "ROMEO:", "-n", "7").returncode == 0
    finally:
        small.stop()


def test_a_target_without_a_port_means_port_50051(server):
    port = server.target.rsplit(":", 1)[1]
    if port == "50051":
        pytest.skip("the test server happens to be on 50051")
    out = cli("127.0.0.1", "--timeout", "2", "health")
    # Nothing listens there: the error names :50051 (not gRPC's default :443). Something that does answered.
    assert (out.returncode == 2 and "(server 127.0.0.1:50051)" in out.stderr) or out.returncode in (0, 1)


def test_the_console_script_is_the_client_packages():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["lstm-client"] == "lstm_client.cli:main"
