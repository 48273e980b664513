"""Helpers for the durability tests (tests/service/test_durability.py,
tests/deploy/test_failover.py): ``python -m lstm_service`` as a real process
that can be killed with SIGKILL and started again on the same port, and
sessions driven over lstm.v1 with full log-probabilities, so a continuation
can be checked bitwise against a replay of the same steps.

Every step here is one call at a time, so each onnxruntime run holds one row
and the original and its replay run the very same computation."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import grpc
import numpy as np

from lstm_service.service.proc.healthcheck import check
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc
from lstm_service.service.persist.snapshot_format import decode_snapshot
from lstm_service.service.persist.snapshots import KEY_PREFIX, STORE_MAGIC
from redis_helpers import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
FULL = pb.OutputOptions(top_k=0, logprobs=True)
Step = Tuple[int, np.ndarray]  # (the session's steps after the call, last position's log-probabilities)


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LSTM_", "PROXY_"))}


class Service:
    """One ``python -m lstm_service`` process; ``start`` again reuses host and port."""

    def __init__(self, model_dir: Path, workdir: Path, name: str, args: Sequence[str] = (),
                 host: str = "127.0.0.1", port: Optional[int] = None) -> None:
        self.model_dir, self.workdir, self.name, self.args = model_dir, workdir, name, list(args)
        self.host, self.port = host, port or free_port()
        self.metrics_port = free_port()
        self.log = workdir / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def launch(self) -> "Service":
        cmd = [sys.executable, "-m", "lstm_service", "--model", str(self.model_dir), "--host", self.host,
               "--port", str(self.port), "--metrics-port", str(self.metrics_port), "--device", "cpu",
               "--grace", "2", *self.args]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_serving(self, timeout: float = 90.0) -> "Service":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (
                f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if check(self.target, timeout=1.0)[0]:
                return self
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not SERVING after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def start(self) -> "Service":
        return self.launch().wait_serving()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM (graceful drain), then SIGKILL if it does not end in time; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def metric(self, name: str) -> Optional[float]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.split()[-1])
        return None


class Driver:
    """lstm.v1 calls on one target, each carrying x-session-id (the proxy's routing key)."""

    def __init__(self, target: str, timeout: float = 20.0) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.LstmServiceStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def _md(self, session_id: str):
        return (("x-session-id", session_id),) if session_id else None

    def create(self, session_id: str, tokens: Sequence[int]) -> Step:
        reply = self.stub.CreateSession(pb.CreateSessionRequest(
            session_id=session_id, prompt=pb.Input(tokens=list(tokens)), output=FULL),
            timeout=self.timeout, metadata=self._md(session_id))
        return _step(reply.result)

    def step(self, session_id: str, tokens: Sequence[int], expected_steps: Optional[int] = None) -> Step:
        request = pb.PredictRequest(session_id=session_id, input=pb.Input(tokens=list(tokens)), output=FULL)
        if expected_steps is not None:
            request.expected_steps = expected_steps
        return _step(self.stub.Predict(request, timeout=self.timeout, metadata=self._md(session_id)).result)

    def session_ids(self) -> List[str]:
        return [s.id for s in self.stub.ListSessions(pb.ListSessionsRequest(limit=1000), timeout=self.timeout).sessions]

    def replay(self, chunks: Sequence[Sequence[int]]) -> List[Step]:
        """The same chunks fed to a new session, one call each; the session is deleted after."""
        sid = "replay-" + uuid.uuid4().hex[:12]
        out = [self.create(sid, chunks[0])]
        out += [self.step(sid, chunk) for chunk in chunks[1:]]
        self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=self.timeout,
                                metadata=self._md(sid))
        return out


def _step(result: pb.StepResult) -> Step:
    return result.steps, np.asarray(result.predictions[-1].logprobs, dtype=np.float32)


def assert_same_step(got: Step, want: Step, what: str) -> None:
    assert got[0] == want[0], f"{what}: steps {got[0]}, the replay has {want[0]}"
    assert got[1].size > 0 and got[1].tobytes() == want[1].tobytes(), (
        f"{what}: log-probabilities differ from the replay (max |diff| {np.abs(got[1] - want[1]).max()})")


def chunks_of(text: bytes, sizes: Sequence[int]) -> List[List[int]]:
    out, at = [], 0
    for size in sizes:
        out.append(list(text[at:at + size]))
        at += size
    assert at <= len(text), "text too short for the chunk sizes"
    return out


def snapshot_steps(redis: RedisServer, session_id: str, owner: str = "anonymous") -> Optional[int]:
    """The steps of the session's snapshot in Redis (read independently of the service), or None.
    The key is spelled out here (lstm:session:<owner>/<id>), not taken from the service."""
    data = redis.get(f"{KEY_PREFIX}{owner}/{session_id}")
    return None if data is None else decode_snapshot(data, STORE_MAGIC).steps


def policy_steps(sizes: Sequence[int], every: int) -> int:
    """The steps of the last snapshot ``--snapshot-every every`` takes while these chunks are fed
    (no idle or evict snapshot): after a commit that puts the session ``every`` or more past it."""
    steps = saved = 0
    for size in sizes:
        steps += size
        if steps - saved >= every:
            saved = steps
    return saved


def wait_for(predicate, timeout: float, what: str):
    """``predicate()``'s first truthy value, asked every 50 ms; AssertionError(what) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return value
