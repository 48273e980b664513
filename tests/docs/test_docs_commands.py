"""Every command shown in README.md, docs/*.md and clients/python/README.md, run against the shipped model
(models/shakespeare), or listed below with the reason it is not run here.

- ``lstm-client ...`` lines (and ``echo ... | lstm-client ...``) run against a real
  server this test starts on a free port: the doc's port (50051 when none) is
  rewritten to it. Optional parts shown as ``[--flag value]`` run included, except
  those with a placeholder such as ``ID``.
- ``lstm-serve ...`` / ``python -m lstm_service ...`` lines start that server, on a
  free port (and a free --http-port), and must reach SERVING; the block's later lines
  talk to it. ``python -m lstm_service.<tool>`` lines run from the repository root.
  Paths in /tmp and docs/img/ go to the test's own directory instead.
- ``python`` blocks run as written (top-level ``await`` allowed) with their
  ``"localhost"``/``"127.0.0.1:50051"`` address rewritten; where the doc says what
  a snippet prints (``prints ... `LINE```), LINE must be a line of its output.
  Likewise the lines of a ``text`` block right after an ``sh`` block must be printed
  by it, in order (``...`` stands for lines left out).
- Anything else must be in NOT_RUNNABLE, with its reason. A new command in the
  docs fails ``test_every_command_is_run_or_listed`` until it is either.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from doc_blocks import OTHER, ROOT, RUN, Block, Command, all_commands, blocks, commands
from lstm_service.service.edge.web.browser import find_chromium

BIN = Path(sys.executable).parent
MODEL = ROOT / "models" / "shakespeare"
DEFAULT_PORT = 50051

_SETUP = "sets up .venv and installs; `make serve` then blocks serving (this test starts the same server itself)"
_TRAIN = "trains for minutes to hours on ../shared/data with torch (tests/model/ trains tiny models)"
_OWN_FILES = "needs the reader's own files (a module, checkpoint, ONNX file or text); tests/export/ runs each export"
_DOCKER = "needs a Docker engine: `make deploy-test` / `make swarm-test` (tests/deploy/) run the deployment"
_FUZZ = "a fuzz run of minutes; tests/fuzz/test_fuzz_small.py runs a small one in `make test`"
_TLS = "needs the certificates `make certs` writes; tests/service/test_tls_newcomer.py serves and calls TLS"
_TOKENS = "a shell recipe whose lines share $token and a tokens file; tests/service/test_security.py covers tokens"

NOT_RUNNABLE: Dict[str, str] = {
    "make serve": _SETUP,
    "make test": "the whole suite, which includes this test",
    "pip install ./clients/python": "installs into the environment; `make serve` installs it (editable)",
    "pip install 'lstm-client[plot]'": "installs into the environment; the dev install has matplotlib",
    "make train": _TRAIN,
    "make export": "re-exports the shipped model from runs/shakespeare, which `make train` writes",
    "python -m lstm_service.export torch --module my_model.py:RNNModel --kwargs kwargs.json --checkpoint model.pt "
    "--vocab vocab.txt --out models/mine [--quantize int8] [--data text.txt]": _OWN_FILES,
    "python -m lstm_service.export onnx --onnx lm.onnx --tokens input_ids --state h_in=h_out,c_in=c_out "
    "--logits scores [--time-first] --tokenizer tokenizer.json --out models/theirs": _OWN_FILES,
    "python -m lstm_service.export --checkpoint runs/shakespeare --out models/shakespeare --quantize int8 "
    "--data text.txt": _OWN_FILES,
    "python -m lstm_service.export --checkpoint runs/shakespeare --out models/shakespeare --quantize int8 "
    "--data TEXT": _OWN_FILES,
    "python -m lstm_service.export torch --module my_model.py:RNNModel --kwargs kwargs.json --checkpoint model.pt "
    "--vocab vocab.txt --out models/mine [--batch-first] [--quantize int8] [--data TEXT]": _OWN_FILES,
    "docker compose up -d --wait": _DOCKER,
    "make deploy": _DOCKER,
    "make deploy-down": _DOCKER,
    "make deploy-update": _DOCKER,
    "docker compose build": _DOCKER,
    "deploy/base-image.sh redis": _DOCKER,
    "LSTM_BASE_IMAGE=lstm-base:bookworm LSTM_PROXY_BASE_IMAGE=lstm-proxy-base:bookworm "
    "LSTM_REDIS_BASE_IMAGE=lstm-redis-base:bookworm docker compose build": _DOCKER,
    "docker compose logs -f proxy": _DOCKER,
    "docker compose down": _DOCKER,
    "docker compose -f docker-compose.yml -f deploy/compose.gpu.yml up -d": _DOCKER + " (and a GPU)",
    "LSTM_REPLICAS=0 docker compose -f docker-compose.yml -f deploy/compose.gpu.yml up -d": _DOCKER + " (and a GPU)",
    "docker compose up -d --scale replica=5": _DOCKER,
    "docker compose -f docker-compose.yml -f deploy/compose.metrics.yml up -d": _DOCKER,
    "LSTM_IMAGE_TAG=v2 deploy/rollout.sh": _DOCKER,
    "LSTM_MODEL_DIR=./models/new deploy/rollout.sh": _DOCKER + " (and a second model)",
    "docker compose build && docker push ...": _DOCKER + " and a registry",
    "deploy/stack-deploy.sh lstm": _DOCKER,
    "LSTM_IMAGE_TAG=v2 deploy/stack-deploy.sh lstm": _DOCKER,
    "deploy/wheelhouse.sh": _DOCKER,
    "deploy/base-image.sh python": _DOCKER,
    "deploy/base-image.sh haproxy": _DOCKER,
    "mkdir -p runs": "the first line of the Docker training recipe below",
    "LSTM_UID=$(id -u) LSTM_GID=$(id -g) docker compose -f docker-compose.yml -f deploy/compose.train.yml "
    "run --rm train lstm_service.model.train --data /data/tinyshakespeare.txt --out runs/shakespeare ...":
        _DOCKER + "; and it trains",
    "docker swarm init": _DOCKER,
    "docker service scale lstm_replica=6": _DOCKER,
    "docker stack rm lstm": _DOCKER,
    "npm install @grpc/grpc-js @grpc/proto-loader grpc-health-check":
        "fetches npm packages; tests/client/test_node_example.py runs the example where node and they are installed",
    "node lstm_example.js 127.0.0.1:50051 protos/lstm/v1/lstm.proto": "see npm install: test_node_example.py",
    "lstm-client stream --keys": "reads keys from a terminal (refused on a pipe); tests/client/test_stream_keys.py",
    "redis-server --port 6379 --appendonly yes &": "a Redis on the fixed port 6379; tests/service/test_durability.py "
                                                  "runs redis-server on free ports",
    "python -m lstm_service --model models/shakespeare --state-store redis://127.0.0.1:6379/0 --snapshot-every 64 "
    "--snapshot-idle-seconds 2 --session-key-file /run/secrets/session.key":
        "needs the Redis above and a key file in /run/secrets; tests/service/test_durability.py",
    "make fuzz": _FUZZ,
    "make fuzz FUZZ_CASES=200000": _FUZZ,
    ".venv/bin/python -m tests.fuzz.run --cases 5000 --seed 3 --jobs 1": _FUZZ,
    ".venv/bin/python -m tests.fuzz.run --cases 5000 --cell gru": _FUZZ,
    ".venv/bin/python -m tests.fuzz.run --target 127.0.0.1:50051 --cases 2000": _FUZZ,
    "LSTM_FUZZ_CASES=3000 LSTM_FUZZ_SEED=5 .venv/bin/python -m pytest tests/fuzz/test_fuzz_small.py": _FUZZ,
    "LD_LIBRARY_PATH=.venv/perf-analyzer/nvidia/cuda_runtime/lib .venv/perf-analyzer/bin/perf_analyzer "
    "-m shakespeare-lstm -u 127.0.0.1:50051 -i grpc --streaming --serial-sequences --sequence-length 64 "
    "--sequence-length-variation 0 --concurrency-range 1:64:21 --input-data tokens.json":
        "perf_analyzer (make perf-analyzer) with a tokens.json; `make bench-kserve` runs it",
    "token=$(openssl rand -hex 24)": _TOKENS,
    "echo \"alice: $(printf %s \"$token\" | sha256sum | cut -d' ' -f1)\" >> tokens": _TOKENS,
    "lstm-serve --tokens-file tokens": _TOKENS,
    "lstm-client --token \"$token\" generate \"ROMEO:\"": _TOKENS,
    "make certs": _TLS,
    "lstm-serve --tls-cert certs/server.pem --tls-key certs/server.key": _TLS,
    "lstm-client --tls-ca certs/ca.pem models": _TLS,
    "lstm-client --tls-ca certs/ca.pem --target localhost models": _TLS,
    "COMMON=\"--data tinyshakespeare.txt --cell lstm --embed 64 --hidden 512 --batch-size 64 --seq-len 128 "
    "--epochs 100 --time-limit 7 --eval-every 100000 --eval-minutes 1.5 --threads 2 --no-progress --warmup 100\"":
        _TRAIN,
    "taskset -c 0,1 python -m lstm_service.model.train $COMMON --out sweep/A --layers 2 --dropout 0.25 --lr 3e-3 &":
        _TRAIN,
    "taskset -c 2,3 python -m lstm_service.model.train $COMMON --out sweep/B --layers 2 --locked-dropout "
    "--dropout 0.25 --input-dropout 0.1 --weight-drop 0.25 --embed-dropout 0.05 --ema 0.99 --lr 3e-3 &": _TRAIN,
    "wait": "waits for the sweep's training runs",
}
_TRAINING_RUN = re.compile(r"^(nice -n 10 )?python -m lstm_service\.model\.(train|step_speed) --data \.\./shared/data/")


def not_runnable(command: Command) -> str:
    """Why a command is not run here ("" when it is). The full training runs of docs/training.md
    differ only in their flags: one rule, anchored on the data path, lists them all."""
    if command.text in NOT_RUNNABLE:
        return NOT_RUNNABLE[command.text]
    if command.block.lang == "sh" and _TRAINING_RUN.match(command.text):
        return _TRAIN
    return ""


def is_server(words: List[str]) -> bool:
    return words[:1] == ["lstm-serve"] or words[:3] == ["python", "-m", "lstm_service"]


def runnable_kind(command: Command) -> str:
    if command.block.lang == "python":
        return "python"
    segments = [shlex.split(s) for s in command.text.rstrip("&").split(" | ")]
    if len(segments) == 1 and is_server(segments[0]):
        return "server"
    if len(segments) == 1 and segments[0][:2] == ["python", "-m"] and segments[0][2].startswith("lstm_service."):
        return "module"
    if segments[-1][:1] == ["lstm-client"] and all(s[:1] == ["echo"] for s in segments[:-1]):
        return "client"
    return ""


# -- the servers ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(proc: subprocess.Popen, target: str, log: Path, timeout: float = 90.0) -> None:
    """Bounded wait for the health check to say SERVING (or the process to die)."""
    from lstm_client import Client

    deadline = time.monotonic() + timeout
    with Client(target, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode} before serving:\n{log.read_text()[-3000:]}")
            try:
                if client.health() == "SERVING":
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.1)
    pytest.fail(f"the server was not SERVING after {timeout:g}s:\n{log.read_text()[-3000:]}")


class Servers:
    """Servers by the port the docs gave them; each really listens on a free port."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: List[subprocess.Popen] = []
        self.targets: Dict[int, str] = {}
        self.pages: Dict[int, int] = {}  # the docs' --http-port -> the one really used

    def start(self, argv: List[str], doc_port: int) -> str:
        port = free_port()
        log = self.tmp / f"server-{len(self.procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(argv + ["--port", str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"))
        self.procs.append(proc)
        target = f"127.0.0.1:{port}"
        wait_serving(proc, target, log)
        self.targets[doc_port] = target
        return target

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    """What `make serve` starts (one process here, to spare the CPUs), on a free port for the docs' 50051."""
    servers = Servers(tmp_path_factory.mktemp("shipped"))
    servers.start([str(BIN / "lstm-serve"), "--model", str(MODEL), "--fronts", "0", "--device", "cpu"], DEFAULT_PORT)
    yield servers.targets[DEFAULT_PORT]
    servers.stop_all()


# -- rewriting and running -------------------------------------------------------------------------
OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
PLACEHOLDER = re.compile(r"\b[A-Z]{2,}\b")


def unwrap_optional(text: str) -> str:
    """``[--layer 1]`` -> ``--layer 1``; ``[--session ID]`` (a placeholder) -> dropped."""
    return OPTIONAL.sub(lambda m: "" if PLACEHOLDER.search(m.group(1)) else m.group(1), text)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1]) if ":" in address else DEFAULT_PORT


def client_argv(words: List[str], targets: Dict[int, str]) -> List[str]:
    words = list(words)
    if "--target" in words:
        i = words.index("--target") + 1
        doc_port = port_of(words[i])
        assert doc_port in targets, f"no server for the doc's port {doc_port} (start one earlier in the block)"
        words[i] = targets[doc_port]
    else:
        words[1:1] = ["--target", targets[DEFAULT_PORT]]
    return words


def server_argv(words: List[str], pages: Dict[int, int]) -> List[str]:
    """The doc's server command without its port (Servers.start adds a free one) and with a free
    --http-port, remembered in ``pages`` under the doc's."""
    words = list(words)
    if "--http-port" in words:
        i = words.index("--http-port") + 1
        pages[int(words[i])] = free_port()
        words[i] = str(pages[int(words[i])])
    if words[0] == "lstm-serve":
        words[0] = str(BIN / "lstm-serve")
    else:
        words[:3] = [sys.executable, "-m", "lstm_service"]
    return words


def local_paths(text: str, cwd: Path, pages: Dict[int, int]) -> str:
    """Files the docs put in /tmp or over the committed pictures go to the test's directory instead,
    and an explain page's URL to the port its server really has."""
    text = text.replace("/tmp/", f"{cwd}/tmp-").replace("docs/img/", f"{cwd}/img-")
    return re.sub(r"http://127\.0\.0\.1:(\d+)/", lambda m: f"http://127.0.0.1:{pages[int(m.group(1))]}/", text)


def run_shell(command: Command, targets: Dict[int, str], servers: Servers, cwd: Path) -> str:
    kind = runnable_kind(command)
    text = local_paths(unwrap_optional(command.text), cwd, servers.pages)
    if kind == "server":
        words = shlex.split(text.rstrip("& "))
        doc_port = int(words[words.index("--port") + 1]) if "--port" in words else DEFAULT_PORT
        if "--port" in words:
            del words[words.index("--port"):words.index("--port") + 2]
        targets[doc_port] = servers.start(server_argv(words, servers.pages), doc_port)
        return ""
    segments = [shlex.split(s) for s in text.split(" | ")]
    where = cwd
    if kind == "module":  # a tool of the package, run where the docs run it (the repository root)
        if segments[0][2] == "lstm_service.service.edge.web.screenshot" and find_chromium() is None:
            pytest.skip("Chromium is not installed (make system-deps)")
        segments[0][:2], where = [sys.executable, "-m"], ROOT
    else:
        segments[-1] = client_argv(segments[-1], targets)
    line = " | ".join(shlex.join(s) for s in segments)
    out = subprocess.run(["bash", "-c", line], cwd=where, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"))
    assert out.returncode == 0, f"{command.where}: `{command.text}` exited {out.returncode}:\n{out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr
    return out.stdout


ADDRESS = re.compile(r"""(["'])(localhost|127\.0\.0\.1)(:\d+)?\1""")
RUNNER = """
import ast, asyncio, sys
result = eval(compile(sys.stdin.read(), "<doc>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT), {"__name__": "__main__"})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


def run_python(command: Command, targets: Dict[int, str], cwd: Path) -> str:
    def address(m: re.Match) -> str:
        doc_port = int(m.group(3)[1:]) if m.group(3) else DEFAULT_PORT
        return repr(targets[doc_port])

    code = ADDRESS.sub(address, command.text)
    out = subprocess.run([sys.executable, "-c", RUNNER], input=code, cwd=cwd, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"{command.where}: the snippet failed:\n{out.stderr[-3000:]}"
    return out.stdout


def output_shown(block: Block) -> List[str]:
    """The lines of a ``text`` block right after an ``sh`` block: what its commands print
    (``...`` marks lines left out)."""
    shown = re.match(r"\n*```text\n(.*?)^```", block.after, re.S | re.M)
    return [line for line in shown.group(1).splitlines() if line != "..."] if shown else []


def printed_claim(block: Block) -> str:
    """The last `quoted` text of a "prints ..." sentence right after the block ("" if none)."""
    paragraph = block.after.lstrip("\n").split("\n\n", 1)[0]
    if not paragraph.startswith("prints"):
        return ""
    quoted = re.findall(r"`([^`]+)`", paragraph.split(".\n", 1)[0])
    return quoted[-1] if quoted else ""


RUNNABLE_BLOCKS = [b for b in blocks() if b.lang in RUN and any(
    not not_runnable(c) for c in commands(b))]


@pytest.mark.parametrize("block", RUNNABLE_BLOCKS, ids=lambda b: f"{b.doc}:{b.line}")
def test_the_docs_commands_run(block: Block, shipped_server: str, tmp_path: Path):
    targets = {DEFAULT_PORT: shipped_server}
    servers = Servers(tmp_path)
    printed: List[str] = []
    try:
        for command in commands(block):
            if not_runnable(command):
                continue
            if block.lang == "python":
                printed = run_python(command, targets, tmp_path)
                claim = printed_claim(block)
                if claim:
                    lines = printed.splitlines()
                    assert claim in lines, f"{block.doc}:{block.line} says it prints {claim!r}; it printed:\n{printed}"
            else:
                printed += run_shell(command, targets, servers, tmp_path).splitlines()
    finally:
        servers.stop_all()
    rest = iter(printed)
    missing = [line for line in output_shown(block) if not any(line == got for got in rest)]
    assert not missing, f"{block.doc}:{block.line}: the output shown after it has lines it did not print " \
        f"(in order): {missing}\nprinted:\n" + "\n".join(printed)


def test_every_command_is_run_or_listed():
    unknown = [f"{c.where}: {c.text}" for c in all_commands() if not not_runnable(c) and not runnable_kind(c)]
    assert not unknown, ("commands in the docs that this test neither runs nor lists; make each runnable here "
                         "or add it to NOT_RUNNABLE with the reason:\n" + "\n".join(unknown))


def test_the_not_runnable_list_has_no_stale_entries():
    shown = {c.text for c in all_commands()}
    stale = [text for text in NOT_RUNNABLE if text not in shown]
    assert not stale, f"NOT_RUNNABLE lists commands the docs no longer show: {stale}"


def test_every_code_block_names_its_language():
    """So commands cannot hide from this test in an unlabelled block."""
    bad = [f"{b.doc}:{b.line} ```{b.lang}" for b in blocks() if b.lang not in RUN | OTHER]
    assert not bad, f"label each block with one of {sorted(RUN | OTHER)}: {bad}"


def test_what_the_readme_says_its_commands_print_is_found():
    """The "prints ... then `LINE`" sentence after the README's first snippet and the words model's
    output are found (so the check above compares them, and cannot pass by finding nothing)."""
    first = next(b for b in blocks() if b.doc == "README.md" and b.lang == "python")
    assert printed_claim(first).startswith("18 [('e', ")
    words = next(b for b in blocks() if b.doc == "README.md" and "shakespeare-words --port" in b.code)
    assert output_shown(words)[0] == "the clouds are in the duke!" and len(output_shown(words)) == 4
