"""Sessions stepping through the deployment while it changes under them (imported as ``session_load``).

Each session runs in a thread of its own, with its own channel, one call at a
time, every step sent with ``expected_steps`` = the count it last saw and
carrying ``x-session-id``. A step whose reply is lost (UNAVAILABLE,
DEADLINE_EXCEEDED, the connection cut while a replica stops or dies) is
resent with the same ``expected_steps`` and ``request_id`` until it is
answered, as docs/errors.md tells a client to; if it turns out to have applied
already on a replica that then went away (FAILED_PRECONDITION with the
session's ``steps`` = the count after it), its chunk is part of the history
but its answer is gone. NOT_FOUND, any other error, or a count that matches
neither is a lost session.

``check_against_replay`` then feeds each session's history (every chunk it
applied, acknowledged or not) to a new session through the deployment, one
call per chunk, as the original was fed, and compares every acknowledged
reply with the replay's, bitwise: the same step count, the same float32
log-probabilities. So a session that was handed over, taken up after a
kill, or drained in an update continues exactly where its client left it.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np

from lstm_client import ClientError
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

TEXT = (b"Now is the winter of our discontent made glorious summer by this sun of York; "
        b"and all the clouds that lour'd upon our house in the deep bosom of the ocean buried. ")
FULL = pb.OutputOptions(top_k=0, logprobs=True)
RESEND = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
          grpc.StatusCode.ABORTED)
Reply = Tuple[int, bytes]  # (steps after the call, float32 log-probabilities of its last position)


def chunk_for(i: int, j: int) -> List[int]:
    """Session i's j-th chunk: 1-3 bytes of its own rotation of TEXT."""
    size = 1 + (i + j) % 3
    at = (7 * i + 3 * j) % (len(TEXT) - 3)
    return list(TEXT[at:at + size])


@dataclass
class History:
    session_id: str
    chunks: List[List[int]] = field(default_factory=list)  # every chunk the session applied, in order
    replies: Dict[int, Reply] = field(default_factory=dict)  # index in chunks -> the acknowledged reply
    resends: int = 0
    resends_now: int = 0  # of the call being sent
    applied_unseen: int = 0  # steps that applied but whose reply was lost with its replica
    lost: Optional[str] = None  # why the session is gone, if it is
    stall: float = 0.0  # the longest wait, from a first send to its answer, in seconds
    events: List[str] = field(default_factory=list)  # each send and its outcome, for a lost session's report

    @property
    def steps(self) -> int:
        return sum(len(c) for c in self.chunks)


def _reply(result: pb.StepResult) -> Reply:
    return result.steps, np.asarray(result.predictions[-1].logprobs, dtype=np.float32).tobytes()


class SessionLoad:
    """``sessions`` sessions stepping through ``target`` until ``stop()`` (or ``max_steps`` calls each)."""

    def __init__(self, target: str, sessions: int = 50, max_steps: int = 40, pace: float = 0.15,
                 prefix: str = "load") -> None:
        self.target, self.max_steps, self.pace = target, max_steps, pace
        run = uuid.uuid4().hex[:6]
        self.histories = [History(f"{prefix}-{run}-session-{i:03d}") for i in range(sessions)]
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.first_ok_after: Dict[str, float] = {}  # session id -> time of its first OK after mark()
        self._mark: Optional[float] = None

    def start(self) -> "SessionLoad":
        for i, history in enumerate(self.histories):
            t = threading.Thread(target=self._run, args=(i, history), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __enter__(self) -> "SessionLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self._stop.set()  # a failed test's sessions stop too (stop() has joined them on success)

    def mark(self) -> float:
        """From now on, note when each session is next answered (after a kill: its failover time)."""
        self.first_ok_after.clear()
        self._mark = time.monotonic()
        return self._mark

    def stop(self, timeout: float = 120.0) -> List[History]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a session thread never finished its call"
        return self.histories

    def longest_wait(self) -> float:
        """The longest any call waited for its answer since the last time this was asked."""
        longest = max(h.stall for h in self.histories)
        for h in self.histories:
            h.stall = 0.0
        return longest

    def steps_done(self) -> int:
        return sum(len(h.chunks) for h in self.histories)

    def wait_steps(self, calls_each: int, timeout: float = 120.0) -> None:
        """Until every live session has made ``calls_each`` more calls than now."""
        want = {h.session_id: len(h.chunks) + calls_each for h in self.histories}
        deadline = time.monotonic() + timeout
        while any(h.lost is None and len(h.chunks) < min(want[h.session_id], self.max_steps)
                  for h in self.histories):
            assert_none_lost(self.histories)  # fail early, with the reason
            assert time.monotonic() < deadline, "the sessions stopped making progress"
            time.sleep(0.1)
        assert_none_lost(self.histories)

    def _run(self, i: int, history: History) -> None:
        channel = grpc.insecure_channel(self.target)
        stub = pb_grpc.LstmServiceStub(channel)
        md = (("x-session-id", history.session_id),)
        try:
            first = chunk_for(i, 0)
            created = self._send(history, lambda rid: stub.CreateSession(pb.CreateSessionRequest(
                session_id=history.session_id, prompt=pb.Input(tokens=first), output=FULL, request_id=rid),
                timeout=10, metadata=md).result, first, create=True)
            if created is None:
                return
            j = 1
            while not self._stop.is_set() and j < self.max_steps and history.lost is None:
                chunk, expected = chunk_for(i, j), history.steps
                self._send(history, lambda rid, chunk=chunk, expected=expected: stub.Predict(pb.PredictRequest(
                    session_id=history.session_id, input=pb.Input(tokens=chunk), output=FULL,
                    expected_steps=expected, request_id=rid), timeout=10, metadata=md).result, chunk)
                j += 1
                self._stop.wait(self.pace)
        finally:
            channel.close()

    def _send(self, history: History, call, chunk: List[int], create: bool = False) -> Optional[Reply]:
        """One step, resent until answered; its reply, or None when it applied unseen or the session is lost."""
        rid = uuid.uuid4().hex
        before = history.steps
        history.resends_now = 0
        started = time.monotonic()
        while True:
            sent = time.time()
            try:
                reply = _reply(call(rid))
            except grpc.RpcError as exc:
                error = ClientError.from_rpc_error(exc)
                code = error.code()
                history.events.append(f"{sent:.3f}+{time.time() - sent:.3f}s expected {before} rid {rid[:6]}: "
                                      f"{code.name} {error.reason} {error.details()[:80]}")
                if code in RESEND and time.monotonic() - started < 60:
                    # Backed off (20 ms doubling to 320 ms): a client that hammers a deployment whose
                    # replicas are all restarting only adds load (and grpcio's C core has aborted
                    # the process under thousands of such resends at once: call_combiner.cc).
                    time.sleep(min(0.32, 0.02 * 2 ** min(history.resends_now, 4)))
                    history.resends += 1
                    history.resends_now += 1
                    continue
                applied_at = error.session_steps
                if (not create and code == grpc.StatusCode.FAILED_PRECONDITION
                        and applied_at == before + len(chunk)):
                    history.chunks.append(chunk)  # it applied on a replica that went away before answering
                    history.applied_unseen += 1
                    self._note_ok(history, started)
                    return None
                if create and code == grpc.StatusCode.ALREADY_EXISTS:
                    history.lost = f"create answered ALREADY_EXISTS after a resend: {error.details()}"
                else:
                    history.lost = f"{code.name} at step {before}: {error.details()} (reason {error.reason})"
                return None
            history.events.append(f"{sent:.3f}+{time.time() - sent:.3f}s expected {before} rid {rid[:6]}: OK {reply[0]}")
            if reply[0] != before + len(chunk):
                history.lost = f"answered with steps {reply[0]}, expected {before + len(chunk)}"
                return None
            history.replies[len(history.chunks)] = reply
            history.chunks.append(chunk)
            self._note_ok(history, started)
            return reply

    def _note_ok(self, history: History, started: float) -> None:
        now = time.monotonic()
        history.stall = max(history.stall, now - started)
        if self._mark is not None and history.session_id not in self.first_ok_after:
            self.first_ok_after[history.session_id] = now - self._mark


def assert_none_lost(histories: Sequence[History]) -> Counter:
    lost = {h.session_id: h.lost for h in histories if h.lost}
    first = next((h for h in histories if h.lost), None)
    assert not lost, (f"{len(lost)} of {len(histories)} sessions lost: {dict(list(lost.items())[:5])}; "
                      f"the last calls of {first.session_id if first else ''}:\n" +
                      "\n".join(first.events[-8:] if first else []))
    return Counter(resends=sum(h.resends for h in histories),
                   applied_unseen=sum(h.applied_unseen for h in histories),
                   steps=sum(len(h.chunks) for h in histories))


def replay(stub, history: History) -> List[Reply]:
    sid = "replay-" + uuid.uuid4().hex[:12]
    md = (("x-session-id", sid),)
    out = [_reply(stub.CreateSession(pb.CreateSessionRequest(
        session_id=sid, prompt=pb.Input(tokens=history.chunks[0]), output=FULL), timeout=30, metadata=md).result)]
    for chunk in history.chunks[1:]:
        out.append(_reply(stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=chunk), output=FULL),
                                       timeout=30, metadata=md).result))
    stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=30, metadata=md)
    return out


def check_against_replay(target: str, histories: Sequence[History], threads: int = 8) -> int:
    """Every acknowledged reply equals the replay's, bitwise; then one more step on each
    session equals one more on its replay (the state it holds now). The replies compared."""
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.LstmServiceStub(channel)

    def one(history: History) -> int:
        # The state it holds now: one more step, compared with one more on the replay.
        probe = [ord("e")]
        md = (("x-session-id", history.session_id),)
        now = _reply(stub.Predict(pb.PredictRequest(session_id=history.session_id, input=pb.Input(tokens=probe),
                                                    output=FULL, expected_steps=history.steps),
                                  timeout=30, metadata=md).result)
        want = replay(stub, History(history.session_id, history.chunks + [probe]))
        for index, got in history.replies.items():
            assert got[0] == want[index][0], f"{history.session_id} call {index}: steps {got[0]} vs {want[index][0]}"
            assert got[1] == want[index][1], (
                f"{history.session_id} call {index}: log-probabilities differ from the replay")
        assert now == want[-1], f"{history.session_id}: its state after {history.steps} steps is not the replay's"
        history.chunks.append(probe)
        return len(history.replies) + 1

    try:
        with ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(one, histories))
    finally:
        channel.close()
