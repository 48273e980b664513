"""Driving a real Docker engine for tests/deploy/test_docker.py and test_swarm.py.

The images are built before (tests/deploy/deploy_test.sh); these helpers only
start, inspect and stop containers, through the docker CLI and Compose v2.
"""
from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

import grpc

from deploy_helpers import ROOT, assert_matches
from lstm_client import Client, ClientError

TEXT = (b"Now is the winter of our discontent made glorious summer by this sun of York; "
        b"and all the clouds that lour'd upon our house in the deep bosom of the ocean buried. ")
MODEL = ROOT / "models" / "shakespeare"  # what compose mounts into every replica


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def logs(container: str) -> str:
    """Everything the container wrote (stdout and stderr)."""
    out = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container))[0]


def exec_in(container: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", container, *cmd], capture_output=True, text=True, timeout=60)


def active_sessions(container: str) -> int:
    """The replica's lstm_active_sessions gauge, read inside it (the backend network is internal)."""
    code = ("import urllib.request as u; t = u.urlopen('http://127.0.0.1:9464/metrics').read().decode();"
            "print(next(l.split()[-1] for l in t.splitlines() if l.startswith('lstm_active_sessions ')))")
    out = exec_in(container, "python", "-c", code)
    assert out.returncode == 0, out.stderr
    return int(float(out.stdout))


def held_sessions(container: str) -> set:
    """The ids of the sessions a replica holds (ListSessions, asked inside it)."""
    code = ("import grpc; from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb, lstm_pb2_grpc as g;"
            "r = g.LstmServiceStub(grpc.insecure_channel('127.0.0.1:50051')).ListSessions("
            "pb.ListSessionsRequest(limit=1000), timeout=10); print(' '.join(s.id for s in r.sessions))")
    out = exec_in(container, "python", "-c", code)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def assert_locked_down(container: str, pid1: str, no_new_privileges: bool = True) -> None:
    """Checked inside the running container: PID 1 is the server itself, a
    non-root uid, no capabilities, and a root filesystem that refuses writes.
    (Swarm ignores security_opt, so no_new_privileges is not asked there.)"""
    info = inspect(container)
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], container
    status = exec_in(container, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[0] == "10001", f"{container}: PID 1 runs as uid {fields['Uid']}"
    for cap in ("CapEff", "CapPrm", "CapBnd"):
        assert int(fields[cap], 16) == 0, f"{container}: {cap} {fields[cap]}"
    if no_new_privileges:
        assert fields["NoNewPrivs"].strip() == "1", container
    cmdline = exec_in(container, "cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    assert pid1 in cmdline, f"{container}: PID 1 is {cmdline!r}"
    write = exec_in(container, "touch", "/etc/written-by-test")
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write


def session_chunks(i: int, steps: int) -> List[bytes]:
    data = (TEXT[i:] + TEXT[:i])[: 5 * steps]
    chunks, at = [], 0
    for j in range(steps):
        size = 1 + (i + j) % 5
        chunks.append(data[at:at + size])
        at += size
    return chunks


def step_sessions_concurrently(target: str, reference, sessions: int = 50, steps: int = 8) -> Dict[str, bytes]:
    """``sessions`` sessions, each in its own thread and channel, stepping at once;
    every reply must equal the in-process onnxruntime replay. Even sessions use
    unary calls, odd ones a Stream. Returns session id -> the bytes it was fed."""
    def run(i: int):
        fed = b""
        with Client(target, timeout=30) as client:
            chunks = session_chunks(i, steps)
            if i % 2:
                stream = client.stream(end_with_stream=False)  # the session outlives the stream
                try:
                    for j, chunk in enumerate(chunks):
                        fed += chunk
                        assert_matches(stream.send(chunk.decode()), reference.logprobs(fed)[-1], len(fed),
                                       f"stream session {i} step {j}")
                    sid = stream.session_id
                finally:
                    stream.close()
            else:
                created = client.create_session(chunks[0].decode())
                sid, fed = created.session.id, chunks[0]
                assert_matches(created.result, reference.logprobs(fed)[-1], len(fed), f"session {i} step 0")
                for j, chunk in enumerate(chunks[1:], 1):
                    fed += chunk
                    assert_matches(client.predict(sid, chunk.decode()), reference.logprobs(fed)[-1], len(fed),
                                   f"session {i} step {j}")
            assert client.get_session(sid).steps == len(fed)
        return sid, fed

    with ThreadPoolExecutor(sessions) as pool:
        return dict(pool.map(run, range(sessions)))


def check_forks(target: str, reference, count: int = 10) -> None:
    with Client(target, timeout=30) as client:
        for _ in range(count):
            parent = client.create_session("ROMEO:").session.id
            fork = client.fork_session(parent)
            assert fork.id.split(".")[0] == parent.split(".")[0]
            assert_matches(client.predict(fork.id, " O"), reference.logprobs(b"ROMEO: O")[-1], 8, "fork")
            assert_matches(client.predict(parent, " J"), reference.logprobs(b"ROMEO: J")[-1], 8, "parent")


def continue_sessions(target: str, reference, fed: Dict[str, bytes]) -> Dict[str, str]:
    """One more step on each session: id -> "ok" (state intact) or the status code name."""
    outcome = {}
    with Client(target, timeout=30) as client:
        for sid, text in fed.items():
            try:
                result = client.predict(sid, "e")
            except ClientError as exc:
                assert exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE), exc
                outcome[sid] = exc.code().name
                continue
            fed[sid] = text + b"e"
            assert_matches(result, reference.logprobs(fed[sid])[-1], len(fed[sid]), f"session {sid[:8]}")
            outcome[sid] = "ok"
    return outcome


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2) -> float:
    """Seconds until ``predicate()`` held."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start
