"""The twin-session model. Each fuzzed session S has a twin T that receives
exactly what S accepted: a step answered OK is replayed on T, a Generate's
tokens are replayed on T (with the same seed when it had one, else as
one-token steps, the shapes the server ran). At checkpoints S and T must
report the same steps as the model and give bitwise-equal log-probabilities
for the same next token.

A call the client ended (deadline, cancel) is ambiguous: the server may have
finished it first. The model then asks GetSession and accepts exactly two
outcomes, nothing or the whole step (for Generate: the prompt and at least
the tokens received); anything else is a mismatch.
"""
from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import grpc

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

from .calls import C, Caller

PROBE_TOKEN = 7
GONE = -1


@dataclass
class Twin:
    s: str  # the fuzzed session
    t: str  # its twin
    steps: int
    fed: bool  # has a last prediction (Generate may continue without a prompt)


def token_ids(message: pb.Input) -> List[int]:
    return list(message.tokens) if len(message.tokens) else list(message.text.encode("utf-8"))


class Book:
    """What the fuzzer knows of the server's sessions in one case."""

    def __init__(self, slots: int) -> None:
        self.slots: List[Optional[Twin]] = [None] * slots
        self.strays: set = set()  # sessions made by hostile or unnamed calls, with no twin
        self._ids = itertools.count()
        self._tag = secrets.token_hex(3)

    def fresh_id(self, kind: str) -> str:
        return f"fz-{kind}-{self._tag}-{next(self._ids):08d}"

    def empty_slot(self) -> Optional[int]:
        return next((i for i, twin in enumerate(self.slots) if twin is None), None)

    def twin_of(self, session_id: str) -> Optional[Twin]:
        return next((t for t in self.slots if t is not None and t.s == session_id), None)

    def known(self) -> set:
        ids = set(self.strays)
        for twin in self.slots:
            if twin is not None:
                ids |= {twin.s, twin.t}
        return ids


class TwinKeeper:
    def __init__(self, stub, caller: Caller, book: Book) -> None:
        self.stub = stub
        self.caller = caller
        self.book = book

    def _must(self, method: str, run, what: str):
        code, reply = self.caller.call(method, run)
        if code != C.OK:
            details = reply.details() if isinstance(reply, grpc.RpcError) else ""
            self.caller.mismatch(f"twin {what}: {method} {code.name} {details}")
            return None
        return reply

    # -- replays ------------------------------------------------------------------
    def step(self, twin: Twin, ids: Sequence[int], start: bool = False) -> None:
        request = pb.PredictRequest(session_id=twin.t, input=pb.Input(tokens=ids), start=start,
                                    output=pb.OutputOptions(top_k=0))
        self._must("Predict", lambda: self.stub.Predict(request), f"replay of {len(ids)} tokens")
        twin.steps = len(ids) if start else twin.steps + len(ids)
        twin.fed = True

    def generated(self, twin: Twin, request: pb.GenerateRequest, received: Sequence[int], n: int) -> None:
        """Replay a Generate that committed its prompt and ``n`` tokens, ``received`` of them seen."""
        prompt = token_ids(request.prompt) if request.HasField("prompt") else []
        s = request.sampling
        if s.HasField("seed") or (s.HasField("temperature") and s.temperature == 0.0):
            replay = pb.GenerateRequest(session_id=twin.t, sampling=s)
            replay.sampling.max_tokens = n
            if prompt:
                replay.prompt.tokens.extend(prompt)
            tokens = self._must("Generate", lambda: [r.token for r in self.stub.Generate(replay)], "replay")
            if tokens is not None and (tokens[: len(received)] != list(received) or len(tokens) != n):
                self.caller.mismatch(f"same seed and state gave other tokens: {list(received)} then {tokens}")
        elif n == len(received):  # as the one-token steps the server ran (step() counts them)
            if prompt:
                self.step(twin, prompt)
            for token in received:
                self.step(twin, [token])
            return
        else:  # unread tokens of an unseeded generation: no way to know them
            self.resync(twin)
            return
        twin.steps += len(prompt) + n
        twin.fed = True

    def follow(self, twin: Twin, ended: bool = False, applied: bool = False) -> bool:
        """After a step that may have (``applied``: did) rewind S into its journal and apply (the
        twin cannot rewind): T becomes a copy of S. False if the step ``ended`` S: T is deleted too.
        An applied step's S may still be held by its open stream, so it is not waited for."""
        if (applied and ended) or (not applied and self.steps_now(twin.s, may_be_gone=ended) == GONE):
            self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=twin.t))
            return False
        self.resync(twin)
        return True

    def resync(self, twin: Twin) -> None:
        """Make T a fresh copy of S (fork), where an exact replay is impossible."""
        self.caller.stats.resyncs += 1
        self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=twin.t))
        twin.t = self.book.fresh_id("t")
        reply = self._must("ForkSession", lambda: self.stub.ForkSession(
            pb.ForkSessionRequest(session_id=twin.s, new_session_id=twin.t)), "resync")
        if reply is not None:
            twin.steps = reply.session.steps
            twin.fed = twin.fed or twin.steps > 0

    # -- ambiguous ends -------------------------------------------------------------
    def steps_now(self, session_id: str, may_be_gone: bool = False) -> Optional[int]:
        """S's steps once no call holds it (a cancelled call lets go asynchronously);
        GONE if it was deleted and ``may_be_gone``."""
        for _ in range(300):
            code, reply = self.caller.call("GetSession", lambda: self.stub.GetSession(
                pb.GetSessionRequest(session_id=session_id)))
            if code == C.NOT_FOUND and may_be_gone:
                return GONE
            if code != C.OK:
                self.caller.mismatch(f"session {session_id} gone after a cancelled call: {code.name}")
                return None
            if not reply.session.busy:
                return reply.session.steps
            time.sleep(0.005)
        self.caller.mismatch(f"session {session_id} still busy 1.5 s after its call ended")
        return None

    def rewind(self, twin: Twin, steps: int) -> bool:
        """Reconcile S to the count the client saw (RewindSession: the journal); the twin holds
        that state already. An S the journal cannot bring back is an unresolved end."""
        code, _ = self.caller.call("RewindSession", lambda: self.stub.RewindSession(
            pb.RewindSessionRequest(session_id=twin.s, steps=steps)))
        if code != C.OK:
            self.caller.stats.unresolved.append(f"{self.caller.context}: RewindSession to {steps} got {code.name}")
            self.resync(twin)
            return False
        self.caller.stats.reconciled += 1
        return True

    def resolve_step(self, twin: Twin, ids: Sequence[int], start: bool, what: str, end: bool = False) -> bool:
        """Settle a step the client ended; False if it applied with ``end`` and so deleted S (and now T)."""
        now = self.steps_now(twin.s, may_be_gone=end)
        if now == GONE:  # a late `end`: the session is gone, nothing to rewind
            self.caller.stats.late_accepted += 1
            self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=twin.t))
            return False
        after = len(ids) if start else twin.steps + len(ids)
        if now is None or (now == twin.steps and now != after):
            return True
        if now == after and not start:  # kept although the call ended: back to what the client saw
            self.rewind(twin, twin.steps)
        elif now == after and now != twin.steps:  # a late `start` begins a new count: no rewind crosses it
            self.caller.stats.late_accepted += 1
            self.step(twin, ids, start)
        elif now == after:  # cannot tell nothing from the whole step: copy S
            self.resync(twin)
        else:
            self.caller.mismatch(f"{what} ended by the client left {now} steps: allowed {twin.steps} or {after}")
            self.resync(twin)
        return True

    def resolve_generate(self, twin: Twin, request: pb.GenerateRequest, received: Sequence[int], limit: int) -> None:
        """A Generate the client ended after ``received`` tokens: rewind S to what the client saw
        (the prompt and those tokens; nothing if none arrived) and feed the twin exactly that."""
        now = self.steps_now(twin.s)
        if now is None:
            return
        prompt = list(token_ids(request.prompt)) if request.HasField("prompt") else []
        n = now - twin.steps - len(prompt)
        if now == twin.steps and not received:
            return
        if now == twin.steps or not max(len(received), 1) <= n <= limit:
            self.caller.mismatch(f"Generate ended by the client: {len(received)} tokens received, the session went "
                                 f"{twin.steps} -> {now} (prompt {len(prompt)}, at most {limit} tokens)")
            self.resync(twin)
            return
        seen = twin.steps + (len(prompt) + len(received) if received else 0)
        if now > seen:
            self.caller.stats.unread_tokens += now - seen
            if not self.rewind(twin, seen):
                return
        if received:  # as the one-token steps the server ran
            if prompt:
                self.step(twin, prompt)
            for token in received:
                self.step(twin, [token])

    # -- checkpoint -----------------------------------------------------------------
    def listing(self) -> Optional[Dict[str, pb.Session]]:
        """Every session on the server, once none of the fuzzed ones is held by a call still ending."""
        for _ in range(300):
            code, reply = self.caller.call("ListSessions", lambda: self.stub.ListSessions(
                pb.ListSessionsRequest(limit=1000)))
            if code != C.OK:
                self.caller.mismatch(f"ListSessions {code.name} at a checkpoint")
                return None
            sessions = {s.id: s for s in reply.sessions}
            if not any(sessions[i].busy for i in self.book.known() if i in sessions):
                return sessions
            time.sleep(0.005)
        self.caller.mismatch("a fuzzed session was still busy 1.5 s after its last call")
        return None

    def check_all(self) -> None:
        """Compare every S with its twin and the model; then delete every session on the server."""
        sessions = self.listing()
        if sessions is None:
            return
        for twin in self.book.slots:
            if twin is not None:
                self.check(twin, sessions)
        self.sweep(sessions)

    def check(self, twin: Twin, sessions: Dict[str, pb.Session]) -> None:
        if twin.s not in sessions or twin.t not in sessions:
            self.caller.mismatch(f"fuzzed session {twin.s} or its twin is gone")
            return
        s_steps, t_steps = sessions[twin.s].steps, sessions[twin.t].steps
        if not s_steps == t_steps == twin.steps:
            self.caller.mismatch(f"steps: session {s_steps}, twin {t_steps}, model {twin.steps} ({twin.s})")
        probe = {sid: self._must("Predict", lambda sid=sid: self.stub.Predict(pb.PredictRequest(
            session_id=sid, input=pb.Input(tokens=[PROBE_TOKEN]), output=pb.OutputOptions(top_k=0, logprobs=True))),
            "probe") for sid in (twin.s, twin.t)}
        if None in probe.values():
            return
        a, b = (list(probe[sid].result.predictions[0].logprobs) for sid in (twin.s, twin.t))
        if a != b:
            worst = max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else "length"
            self.caller.mismatch(f"state of {twin.s} differs from its twin's (max |diff| {worst})")

    def sweep(self, sessions: Dict[str, pb.Session]) -> None:
        """Delete every session on the server; file those the fuzzer never learned of as orphans."""
        known = self.book.known()
        for session_id, session in sessions.items():
            if session_id not in known:
                self.caller.mismatch(f"orphan session {session_id[:60]} ({session.steps} steps): no reply named it")
            self.caller.call("DeleteSession", lambda session_id=session_id: self.stub.DeleteSession(
                pb.DeleteSessionRequest(session_id=session_id)))
