"""Running one fuzz case: each operation against the live server, its status
judged, what S accepted replayed on its twin, then a checkpoint and a sweep."""
from __future__ import annotations

import time

import grpc

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

from .calls import C, Caller, metadata, predictions_problem
from .limits import run_limits
from .streams import run_busy, run_stream
from .strategies import RIGHT_COUNT, Case, Op, Raw, Slot, has_field
from .twin import Book, Twin, TwinKeeper, token_ids

PATH = "/lstm.v1.LstmService/"
DEFAULT_MAX_TOKENS = 64


class CaseRunner:
    def __init__(self, channel: grpc.Channel, stub, caller: Caller, slots: int) -> None:
        self.channel, self.stub, self.caller, self.slots = channel, stub, caller, slots

    def run(self, case: Case) -> None:
        self.generates = 0  # every other Generate carries a request id (the others reconcile by the journal)
        self.book = Book(self.slots)
        self.twins = TwinKeeper(self.stub, self.caller, self.book)
        for index, prompt in enumerate(case.prompts):
            self._create_slot(index, prompt)
        for op in case.ops:
            self.run_op(op)
        self.caller.context = "the checkpoint"
        self.twins.check_all()

    def run_op(self, op: Op) -> None:
        self.caller.context = repr(op)
        getattr(self, "_" + op.kind)(op)

    # -- helpers ------------------------------------------------------------------
    def _id(self, ref) -> str:
        if isinstance(ref, Slot):
            twin = self.book.slots[ref.index]
            return twin.s if twin else self.book.fresh_id("gone")
        return ref.text if isinstance(ref, Raw) else ""

    def _twin(self, ref) -> Twin | None:
        return self.book.slots[ref.index] if isinstance(ref, Slot) else None

    def _meta(self, op: Op, body_id: str):
        header = op.call.header
        value = body_id if header == "same" else (self._id(header) if header is not None else None)
        return metadata(value), bool(value and body_id and value != body_id)

    def _expected(self, message, twin: Twin | None) -> None:
        if twin and has_field(type(message), "expected_steps") and message.HasField("expected_steps") \
                and message.expected_steps == RIGHT_COUNT:
            message.expected_steps = twin.steps

    def _judge(self, method, code, reply, op: Op, disagree: bool, extra=()):
        extra = set(extra) | ({C.DEADLINE_EXCEEDED} if op.call.timeout else set())
        self.caller.judge(method, code, reply, extra, repr(op)[:300])
        if disagree and code == C.OK:
            self.caller.fail(self.caller.stats.unexpected, f"{method} OK although body id and x-session-id differ")

    def _wrong_expectation(self, message, twin: Twin | None, code, op: Op | None = None, ended: bool = False) -> bool:
        """True if ``message`` expected another count than the twin's (the caller then skips its
        replay). Below the count, the server rewinds into the journal and applies: certainly on
        OK, possibly on an ambiguous end; the twin cannot rewind, so it follows S (and goes with
        it if the step ``ended`` S, freeing ``op``'s slot)."""
        wrong = twin and has_field(type(message), "expected_steps") and message.HasField("expected_steps") \
            and message.expected_steps != twin.steps
        if not wrong:
            return False
        if message.expected_steps > twin.steps:
            if code == C.OK:
                self.caller.mismatch(f"applied although expected_steps {message.expected_steps} > {twin.steps}")
        elif code in (C.OK, C.CANCELLED, C.DEADLINE_EXCEEDED) and not self.twins.follow(twin, ended, code == C.OK) \
                and op is not None:
            self.book.slots[op.session.index] = None
        return True

    def _create_slot(self, index: int, prompt) -> None:
        sid, tid = self.book.fresh_id("s"), self.book.fresh_id("t")
        for session_id in (sid, tid):
            request = pb.CreateSessionRequest(session_id=session_id)
            if prompt is not None:
                request.prompt.tokens.extend(token_ids(prompt))
            code, reply = self.caller.call("CreateSession", lambda request=request: self.stub.CreateSession(request))
            self.caller.judge("CreateSession", code, reply, what="slot set-up")
            if code != C.OK:
                self.book.strays.add(sid)
                return
        steps = len(token_ids(prompt)) if prompt is not None else 0
        self.book.slots[index] = Twin(sid, tid, steps, steps > 0)

    # -- steps ----------------------------------------------------------------------
    def _predict(self, op: Op) -> None:
        twin, request = self._twin(op.session), pb.PredictRequest()
        request.CopyFrom(op.request)
        request.session_id = self._id(op.session)
        self._expected(request, twin)
        meta, disagree = self._meta(op, request.session_id)
        code, reply = self.caller.call("Predict", lambda: self.stub.Predict(request, timeout=op.call.timeout,
                                                                           metadata=meta))
        self._judge("Predict", code, reply, op, disagree)
        ids = token_ids(request.input)
        if code == C.OK:
            problem = predictions_problem(request.output if request.HasField("output") else None, len(ids),
                                          reply.result)
            if problem:
                self.caller.mismatch(f"Predict reply: {problem}")
        if twin is None or self._wrong_expectation(request, twin, code, op):
            return
        if code == C.OK:
            after = len(ids) if request.start else twin.steps + len(ids)
            if reply.result.steps != after or reply.result.consumed != len(ids):
                self.caller.mismatch(f"Predict answered steps {reply.result.steps}, consumed "
                                     f"{reply.result.consumed}; expected {after}, {len(ids)}")
            self.twins.step(twin, ids, request.start)
        elif code == C.DEADLINE_EXCEEDED:
            self.twins.resolve_step(twin, ids, request.start, "Predict")

    def _retry(self, op: Op) -> None:
        twin = self._twin(op.session)
        if twin is None or not has_field(pb.PredictRequest, "expected_steps"):
            return
        request = pb.PredictRequest(session_id=twin.s, input=op.request, expected_steps=twin.steps)
        code, reply = self.caller.call("retry", lambda: self.stub.Predict(request, timeout=op.call.timeout))
        self.caller.judge("Predict", code, reply, {C.DEADLINE_EXCEEDED}, repr(op))
        if code == C.DEADLINE_EXCEEDED:  # the reply is lost: resend as it is (if the first applied, the
            # server rewinds to expected_steps and applies it again: the same state)
            applied = self.twins.steps_now(twin.s) != twin.steps
            code, reply = self.caller.call("retry", lambda: self.stub.Predict(request))
            self.caller.stats.statuses[("retry after deadline", code.name)] += 1
            if code != C.OK:
                self.caller.mismatch(f"a retry with the right expected_steps got {code.name}")
                return
            if applied:  # a late OK, rewound by the resend
                self.caller.stats.reconciled += 1
        elif code != C.OK:
            return
        self.twins.step(twin, list(op.request.tokens))

    def _stream(self, op: Op) -> None:
        run_stream(self, op)

    def _busy(self, op: Op) -> None:
        run_busy(self, op)

    def _generate(self, op: Op) -> None:
        twin, request = self._twin(op.session), pb.GenerateRequest()
        request.CopyFrom(op.request)
        request.session_id = self._id(op.session)
        self._expected(request, twin)
        self.generates += 1
        if self.generates % 2 == 0:
            request.request_id = self.book.fresh_id("rid")
        meta, disagree = self._meta(op, request.session_id)
        cancel_after = op.extra[0]
        received, code, error = [], C.OK, None
        self.caller.stats.calls += 1
        call = self.stub.Generate(request, timeout=op.call.timeout, metadata=meta)
        try:
            if cancel_after == 0:
                call.cancel()
            for response in call:
                received.append(response)
                if cancel_after is not None and len(received) >= cancel_after and not response.finish_reason:
                    call.cancel()
        except grpc.RpcError as exc:
            code, error = exc.code(), exc
        self._judge("Generate", code, error, op, disagree, {C.CANCELLED} if cancel_after is not None else ())
        self._check_generated(request, received, code)
        if twin is None or self._wrong_expectation(request, twin, code, op):
            return
        limit = request.sampling.max_tokens or DEFAULT_MAX_TOKENS
        tokens = [r.token for r in received]
        if code == C.OK:
            self.twins.generated(twin, request, tokens, len(tokens))
        elif code in (C.CANCELLED, C.DEADLINE_EXCEEDED) and request.request_id:
            self._resend_generate(twin, request, tokens)
        elif code in (C.CANCELLED, C.DEADLINE_EXCEEDED) or received:
            self.twins.resolve_generate(twin, request, tokens, limit)

    def _resend_generate(self, twin: Twin, request: pb.GenerateRequest, received) -> None:
        """A Generate the client ended, resent with its request id (no deadline, read to its end):
        it replays exactly the tokens the first call kept, read or not (or, if it kept none, runs
        afresh); S then holds the prompt and those tokens, and so is the twin fed."""
        resend = pb.GenerateRequest()
        resend.CopyFrom(request)
        for _ in range(200):  # the first call may still hold the session (or still run) for a moment
            code, replies = self.caller.call("Generate", lambda: list(self.stub.Generate(resend)))
            if code != C.ABORTED:
                break
            time.sleep(0.005)
        self.caller.judge("Generate", code, replies, what="resent with its request id")
        tokens = [r.token for r in replies] if code == C.OK else []
        if code != C.OK and received:
            self.caller.stats.unresolved.append(f"{self.caller.context}: Generate resent with its id got {code.name}")
            self.twins.resync(twin)
            return
        if tokens[: len(received)] != list(received):
            self.caller.mismatch(f"Generate resent with its id replayed {tokens[:8]}, the first call sent {received[:8]}")
            self.twins.resync(twin)
            return
        self.caller.stats.retried_with_id += 1
        self.caller.stats.replayed_tokens += len(tokens) - len(received)
        prompt = list(token_ids(request.prompt)) if request.HasField("prompt") else []
        now = self.twins.steps_now(twin.s)
        want = twin.steps + (len(prompt) + len(tokens) if tokens else 0)
        if now != want:
            self.caller.mismatch(f"after a Generate resent with its id: {now} steps, {want} replayed")
            self.twins.resync(twin)
            return
        if tokens:  # as the one-token steps the server ran
            if prompt:
                self.twins.step(twin, prompt)
            for token in tokens:
                self.twins.step(twin, [token])

    def _check_generated(self, request, received, code) -> None:
        limit = request.sampling.max_tokens or DEFAULT_MAX_TOKENS
        finished = [r for r in received if r.finish_reason]
        if len(received) > limit or any(not 0 <= r.token < 256 or not r.logprob <= 0.0 for r in received):
            self.caller.mismatch(f"Generate sent {len(received)} tokens (limit {limit}) or a bad token/logprob")
        if finished and finished[-1] is not received[-1] or (code == C.OK and received and not finished):
            self.caller.mismatch("Generate: finish_reason not exactly on the last message")
        steps = [r.steps for r in received]
        if any(b != a + 1 for a, b in zip(steps, steps[1:])):
            self.caller.mismatch(f"Generate: steps not consecutive: {steps[:10]}")

    # -- sessions --------------------------------------------------------------------
    def _create(self, op: Op) -> None:
        slot = op.session.index if isinstance(op.session, Slot) else None
        empty = slot is not None and self.book.slots[slot] is None
        request = pb.CreateSessionRequest()
        request.CopyFrom(op.request)
        request.session_id = self.book.fresh_id("s") if empty else self._id(op.session)
        if empty:
            request.ttl_seconds = 0  # a fuzzed session must not expire mid-case
        meta, disagree = self._meta(op, request.session_id)
        code, reply = self._once(op, "CreateSession", request, meta)
        self._judge("CreateSession", code, reply, op, disagree)
        if code != C.OK:
            return
        prompt = token_ids(request.prompt) if request.HasField("prompt") else []
        if reply.session.steps != len(prompt):
            self.caller.mismatch(f"CreateSession: steps {reply.session.steps} after a {len(prompt)}-token prompt")
        if not empty or reply.session.id != request.session_id:
            self.book.strays.add(reply.session.id)
            return
        tid = self.book.fresh_id("t")
        twin_request = pb.CreateSessionRequest(session_id=tid, prompt=pb.Input(tokens=prompt))
        if self.twins._must("CreateSession", lambda: self.stub.CreateSession(twin_request), "create") is not None:
            self.book.slots[slot] = Twin(reply.session.id, tid, len(prompt), bool(prompt))
        else:
            self.book.strays.add(reply.session.id)

    def _once(self, op: Op, method: str, request, meta):
        """Call a mutating ``method`` with a fresh request id under the op's deadline; one that ends
        DEADLINE_EXCEEDED is resent, the same request with the same id, without one: it must end
        with exactly one effect whatever the first attempt did (the first answer if it applied).
        (code, reply) of the call that settled it."""
        request.request_id = self.book.fresh_id("rid")
        call = getattr(self.stub, method)
        code, reply = self.caller.call(method, lambda: call(request, timeout=op.call.timeout, metadata=meta))
        if code != C.DEADLINE_EXCEEDED:
            return code, reply
        self.caller.stats.statuses[(method, code.name)] += 1
        for _ in range(200):  # the first attempt may still hold the session for a moment
            code, reply = self.caller.call(method, lambda: call(request, metadata=meta))
            if code != C.ABORTED:
                break
            time.sleep(0.005)
        self.caller.stats.retried_with_id += 1
        return code, reply

    def _by_id(self, op: Op, method: str, message):
        twin, request = self._twin(op.session), type(message)()
        request.CopyFrom(message)
        request.session_id = self._id(op.session)
        meta, disagree = self._meta(op, request.session_id)
        if method == "GetSession":
            code, reply = self.caller.call(method, lambda: getattr(self.stub, method)(request, metadata=meta))
        else:
            code, reply = self._once(op, method, request, meta)
        self._judge(method, code, reply, op, disagree)
        if twin is not None and code == C.NOT_FOUND:
            self.caller.mismatch(f"{method}: fuzzed session {twin.s} vanished: {reply.details()[:200]}")
        return twin, code, reply

    def _get(self, op: Op) -> None:
        twin, code, reply = self._by_id(op, "GetSession", op.request)
        if twin and code == C.OK and reply.session.steps != twin.steps:
            self.caller.mismatch(f"GetSession: steps {reply.session.steps}, model {twin.steps}")

    def _reset(self, op: Op) -> None:
        twin, code, reply = self._by_id(op, "ResetSession", op.request)
        if twin and code == C.OK:
            self.twins._must("ResetSession", lambda: self.stub.ResetSession(pb.ResetSessionRequest(session_id=twin.t)),
                             "reset")
            twin.steps, twin.fed = 0, False

    def _delete(self, op: Op) -> None:
        twin, code, reply = self._by_id(op, "DeleteSession", op.request)
        if code == C.OK and twin:
            if reply.steps != twin.steps:
                self.caller.mismatch(f"DeleteSession: steps {reply.steps}, model {twin.steps}")
            self.twins._must("DeleteSession", lambda: self.stub.DeleteSession(
                pb.DeleteSessionRequest(session_id=twin.t)), "delete")
            self.book.slots[op.session.index] = None

    def _fork(self, op: Op) -> None:
        target, slot = op.extra[0], self.book.empty_slot()
        request = pb.ForkSessionRequest()
        request.CopyFrom(op.request)
        tracked = target in ("slot", "") and slot is not None and self._twin(op.session) is not None
        request.new_session_id = self.book.fresh_id("s") if target == "slot" else target
        if tracked:
            request.ttl_seconds = 0
        twin, code, reply = self._by_id(op, "ForkSession", request)
        if code != C.OK:
            return
        if twin and reply.session.steps != twin.steps:
            self.caller.mismatch(f"ForkSession: the fork has {reply.session.steps} steps, its source {twin.steps}")
        if not tracked:
            self.book.strays.add(reply.session.id)
            return
        tid = self.book.fresh_id("t")
        if self.twins._must("ForkSession", lambda: self.stub.ForkSession(
                pb.ForkSessionRequest(session_id=twin.t, new_session_id=tid)), "fork") is not None:
            self.book.slots[slot] = Twin(reply.session.id, tid, twin.steps, twin.fed)
        else:
            self.book.strays.add(reply.session.id)

    def _import(self, op: Op) -> None:
        """Export a fuzzed session and import its blob with a request id (and maybe a deadline,
        resent with the id after one): exactly one new session, holding S's steps."""
        twin = self._twin(op.session)
        if twin is None:
            return
        code, blob = self.caller.call("ExportSession", lambda: self.stub.ExportSession(
            pb.ExportSessionRequest(session_id=twin.s)))
        self.caller.judge("ExportSession", code, blob, what=repr(op))
        if code != C.OK:
            return
        code, reply = self._once(op, "ImportSession", pb.ImportSessionRequest(blob=blob.blob), ())
        self._judge("ImportSession", code, reply, op, False)
        if code == C.OK:
            if reply.session.steps != twin.steps:
                self.caller.mismatch(f"ImportSession: {reply.session.steps} steps, its source {twin.steps}")
            self.book.strays.add(reply.session.id)

    def _list(self, op: Op) -> None:
        code, reply = self.caller.call("ListSessions", lambda: self.stub.ListSessions(op.request))
        self._judge("ListSessions", code, reply, op, False)
        if code == C.OK and (len(reply.sessions) > (op.request.limit or 100) or reply.total < len(reply.sessions)):
            self.caller.mismatch(f"ListSessions(limit {op.request.limit}): {len(reply.sessions)} of {reply.total}")

    def _models(self, op: Op) -> None:
        method = "ListModels" if isinstance(op.request, pb.ListModelsRequest) else "GetModel"
        code, reply = self.caller.call(method, lambda: getattr(self.stub, method)(op.request))
        self._judge(method, code, reply, op, False)

    def _limits(self, op: Op) -> None:
        run_limits(self, op)

    def _raw(self, op: Op) -> None:
        method, payload = op.extra
        path = PATH + method
        if method == "Generate":
            run = lambda: list(self.channel.unary_stream(path)(payload, timeout=10))  # noqa: E731
        elif method == "Stream":
            run = lambda: list(self.channel.stream_stream(path)(iter([payload]), timeout=10))  # noqa: E731
        else:
            run = lambda: self.channel.unary_unary(path)(payload, timeout=10)  # noqa: E731
        code, reply = self.caller.call(method, run)
        self._judge(method, code, reply, op, False, {C.INVALID_ARGUMENT})
        if code == C.OK and method in ("CreateSession", "ForkSession"):
            parsed = getattr(pb, method + "Response").FromString(reply)
            self.book.strays.add(parsed.session.id)
        elif code == C.OK and method == "Stream":
            for raw in reply:
                opened = pb.StreamResponse.FromString(raw)
                if opened.HasField("opened"):
                    self.book.strays.add(opened.opened.id)
