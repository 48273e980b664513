"""``lstm-client`` and the Python client, unchanged, against the shipped word model
(models/shakespeare-words, vocabulary kind "words"): text in, words out."""
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_client import Client
from tools.server_process import ServerProcess
from lstm_service.service.core.vocab_words import split_words

WORDS_MODEL = Path(__file__).resolve().parents[2] / "models" / "shakespeare-words"


@pytest.fixture(scope="module")
def words_server():
    process = ServerProcess(["--model", str(WORDS_MODEL), "--device", "cpu", "--log-format", "text", "--grace", "1"])
    yield process
    process.stop()


def cli(target: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstm_client", "--target", target, *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def vocabulary():
    return set((WORDS_MODEL / "vocab.txt").read_text().split())


def test_the_cli_generates_and_streams_words(words_server):
    models = cli(words_server.target, "models")
    assert models.returncode == 0, models.stderr
    assert f"vocab words {len(vocabulary())}" in models.stdout and "nats/token" in models.stdout

    out = cli(words_server.target, "generate", "the clouds are in the", "-n", "12", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("the clouds are in the ")  # the prompt, then one space before the first word
    generated = out.stdout[len("the clouds are in the"):]
    assert "  " not in generated.replace("\n", " \n")  # no doubled spaces between words
    words = split_words(generated.replace("<unk>", " "), "punctuation", lowercase=True)  # as the server splits
    assert words and all(w in vocabulary() for w in words)

    fed = cli(words_server.target, "stream", "--no-newlines", stdin="the clouds are in the\n")
    assert fed.returncode == 0, fed.stderr
    line = fed.stdout.splitlines()[0]
    assert line.startswith("[5 tokens] next: '")  # five words, and the candidates are words


def test_the_python_client_sends_text_and_gets_words(words_server):
    with Client(words_server.target) as client:
        with client.stream() as s:
            result = s.send("the clouds are in the")
        assert result.steps == 5
        top = result.predictions[-1].top
        assert top and all(c.text in vocabulary() | {"\n"} for c in top)
        assert client.generate_text("the clouds are in the", max_tokens=8, seed=2).startswith("the clouds are in the ")
