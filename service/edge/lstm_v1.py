"""The lstm.v1 servicer: decode and validate requests, call the engine through the
contract (api/engine.py), encode answers (edge/lstm_v1_codec.py). Handlers run in
edge/rpc.py's plumbing (admission, status mapping); no model or session state is
touched here (the engine owns it).
"""
from __future__ import annotations

import contextlib
from typing import Optional

from ..api.engine import EngineApi
from ..api.errors import FailedPrecondition, InvalidArgument, NotFound, SessionBusy, quote
from ..api.options import StepOptions
from ..api.values import Caller
from ..proto.lstm.v1 import lstm_pb2 as pb
from ..proto.lstm.v1 import lstm_pb2_grpc as pb_grpc
from ..proc import budget
from . import lstm_v1_codec as codec
from .admission import Admission
from .identity import Authenticator
from .request_ids import once, recall
from .rpc import commit_if_live, live_check, rpc_handler

SESSION_HEADER = "x-session-id"


class LstmServicer(Admission, pb_grpc.LstmServiceServicer):
    def __init__(self, engine: EngineApi, metrics=None, auth: Optional[Authenticator] = None,
                 session_key: bytes = b"") -> None:
        super().__init__(metrics, engine.config.stream_idle_timeout)
        self.engine = engine
        self.auth = auth or Authenticator()
        self.session_key = session_key  # signs ExportSession blobs (--session-key-file)

    def _caller(self, context) -> Caller:
        return self.auth.caller(context)

    # -- decoding helpers ------------------------------------------------
    def _session_id(self, field: str, context) -> str:
        """The session id is the request's; x-session-id metadata only routes (a mismatch is an error).
        An admin's PRINCIPAL/ID may route by the bare ID: that is what the session's own calls hash."""
        for key, value in context.invocation_metadata() or ():
            if key == SESSION_HEADER and field and value not in (field, field.rpartition("/")[2]):
                raise InvalidArgument(
                    f"session_id {quote(field)} and {SESSION_HEADER} metadata {quote(value)} disagree; "
                    "the metadata only routes, set it to the same id", field="session_id")
        return field

    def _options(self, message, field: str = "output") -> Optional[StepOptions]:
        if not message.HasField(field):
            return None
        output = getattr(message, field)
        top_k = output.top_k if output.HasField("top_k") else None
        return self.engine.step_options(top_k, output.all_positions, output.logprobs)

    def _prompt(self, message: pb.Input, what: str = "prompt"):
        if len(message.tokens) or message.text:
            return self.engine.tokens(message.tokens, message.text, what)
        return None

    def _fill_session(self, response, info) -> None:
        """A record op's reply from the session record its commit gave (also a retry's)."""
        response.session.CopyFrom(codec.session(info, self.engine.card.name))

    @staticmethod
    def _expected(message, session_id: str) -> Optional[int]:
        if not message.HasField("expected_steps"):
            return None
        if not session_id:
            raise InvalidArgument("expected_steps needs a session_id (a stateless call has no steps to check)",
                                  field="expected_steps")
        return message.expected_steps

    # -- steps ----------------------------------------------------------
    @rpc_handler
    async def Stream(self, request_iterator, context):
        requests = request_iterator.__aiter__()
        first = await self.next_request(requests)
        if first is None:
            return
        if first.WhichOneof("kind") != "open":
            raise InvalidArgument("the first message on a stream must be `open` (attach to or create a session)")
        o = first.open
        defaults = self._options(o) or self.engine.step_options(None, False, False)
        session_id, create, caller = self._session_id(o.session_id, context), o.create, self._caller(context)
        end_with_stream = o.end_with_stream if o.HasField("end_with_stream") else (o.create and not session_id)
        kept, remember = await recall(self.engine, "Stream.open", o, caller)
        if kept is not None and kept.info is not None:  # a retried open: the session the first one opened
            session_id, create = kept.info.id, False
        hold = await self.engine.open_stream(session_id, create, o.ttl_seconds, end_with_stream, caller, remember)
        engine, vocab = self.engine, self.engine.vocab
        try:
            yield pb.StreamResponse(opened=codec.session(hold.info, engine.card.name))
            while (request := await self.next_request(requests)) is not None:
                began = mark = budget.start()  # the cost timers (proc/budget.py), None when off
                if request.WhichOneof("kind") != "step":
                    raise InvalidArgument("`open` may only be the first message; send `step` messages after it")
                step = request.step
                options = self._options(step) or defaults
                ids = engine.tokens(step.input.tokens, step.input.text)
                expected = step.expected_steps if step.HasField("expected_steps") else None
                budget.add("edge.check", mark)
                mark = budget.start()
                pending = await hold.run(ids, options, step.start, expected)
                budget.add_wall("edge.run", mark)
                mark = budget.start()
                response = pb.StreamResponse()
                codec.step_result(response.result, pending.result, vocab, step.tag)
                budget.add("edge.encode", mark)
                mark = budget.start()
                hold.commit(pending)  # committed as the reply goes out: a client never sees an uncommitted step
                if step.end:
                    hold.end_session("was ended by its stream (step.end)")
                budget.add("edge.commit", mark)
                budget.add_wall("edge.residence", began)
                yield response
        finally:
            hold.release()

    @rpc_handler
    async def Predict(self, request, context):
        session_id = self._session_id(request.session_id, context)
        options = self._options(request) or self.engine.step_options(None, False, False)
        ids = self.engine.tokens(request.input.tokens, request.input.text)
        expected = self._expected(request, session_id)
        caller = self._caller(context)

        async def run(note) -> pb.PredictResponse:
            result, commit = await self.engine.predict_deferred(session_id, ids, options, request.start, expected,
                                                                caller)
            try:
                response = pb.PredictResponse()
                codec.step_result(response.result, result, self.engine.vocab)
                remember = note(response) if note is not None else None
            except BaseException:
                commit(False)
                raise
            commit_if_live(context, commit, remember)  # the answer kept with the commit
            return response

        return await once(self.engine, "Predict", request, caller, pb.PredictResponse, run)

    @rpc_handler
    async def Generate(self, request, context):
        session_id = self._session_id(request.session_id, context)
        prompt = self._prompt(request.prompt)
        s = request.sampling
        options = self.engine.generate_options(
            s.max_tokens,
            s.temperature if s.HasField("temperature") else None,
            s.top_k,
            s.top_p if s.HasField("top_p") else None,
            s.seed if s.HasField("seed") else None,
            list(s.stop),
        )
        expected = self._expected(request, session_id)
        caller = self._caller(context)
        kept, remember = await recall(self.engine, "Generate", request, caller)
        if kept is not None:  # a retry: the tokens the first call kept, generated nothing again
            if kept.running:
                raise SessionBusy(f"the first Generate with request_id {quote(request.request_id)} is still "
                                  "running; retry once it ends (its retry then replays the tokens it kept)")
            for g in kept.tokens:
                yield codec.generated(g, session_id)
            return
        tokens = self.engine.generate(session_id, prompt, options, expected, caller, remember)
        async with contextlib.aclosing(tokens):
            async for g in tokens:
                yield codec.generated(g, session_id)

    # -- sessions -------------------------------------------------------
    @rpc_handler
    async def CreateSession(self, request, context):
        session_id = self._session_id(request.session_id, context)
        prompt = self._prompt(request.prompt)
        options = self._options(request) or self.engine.step_options(None, False, False)
        caller = self._caller(context)
        model, vocab = self.engine.card.name, self.engine.vocab

        def before_commit(result) -> pb.CreateSessionResponse:
            response = pb.CreateSessionResponse()
            if result is not None:
                codec.step_result(response.result, result, vocab)
            return response

        def fill(response: pb.CreateSessionResponse, info) -> None:
            response.session.CopyFrom(codec.session(info, model))
            if response.HasField("result"):
                response.result.session_id = info.id

        async def run(note) -> pb.CreateSessionResponse:
            remember = (lambda result: note(before_commit(result))) if note is not None else None
            info, result = await self.engine.create(session_id or None, request.ttl_seconds, prompt, options,
                                                    live_check(context), caller, remember)
            response = before_commit(result)
            fill(response, info)
            return response

        return await once(self.engine, "CreateSession", request, caller, pb.CreateSessionResponse, run, fill)

    @rpc_handler
    async def GetSession(self, request, context):
        info = await self.engine.get_session(self._session_id(request.session_id, context), self._caller(context))
        return pb.GetSessionResponse(session=codec.session(info, self.engine.card.name))

    @rpc_handler
    async def ResetSession(self, request, context):
        session_id, caller = self._session_id(request.session_id, context), self._caller(context)

        async def run(note) -> pb.ResetSessionResponse:
            response = pb.ResetSessionResponse()
            info = await self.engine.reset_session(session_id, live_check(context), caller,
                                                   note(response) if note is not None else None)
            self._fill_session(response, info)
            return response

        return await once(self.engine, "ResetSession", request, caller, pb.ResetSessionResponse, run,
                          self._fill_session)

    @rpc_handler
    async def DeleteSession(self, request, context):
        session_id, caller = self._session_id(request.session_id, context), self._caller(context)

        def fill(response: pb.DeleteSessionResponse, info) -> None:
            response.steps = info.steps

        async def run(note) -> pb.DeleteSessionResponse:
            response = pb.DeleteSessionResponse()
            info = await self.engine.delete_session(session_id, live_check(context), caller,
                                                    note(response) if note is not None else None)
            fill(response, info)
            return response

        return await once(self.engine, "DeleteSession", request, caller, pb.DeleteSessionResponse, run, fill)

    @rpc_handler
    async def RewindSession(self, request, context):
        session_id, caller = self._session_id(request.session_id, context), self._caller(context)
        info = await self.engine.rewind_session(session_id, request.steps, live_check(context), caller)
        return pb.RewindSessionResponse(session=codec.session(info, self.engine.card.name))

    @rpc_handler
    async def ForkSession(self, request, context):
        source, caller = self._session_id(request.session_id, context), self._caller(context)

        async def run(note) -> pb.ForkSessionResponse:
            response = pb.ForkSessionResponse()
            info = await self.engine.fork_session(source, request.new_session_id or None, request.ttl_seconds,
                                                  live_check(context), caller,
                                                  note(response) if note is not None else None)
            self._fill_session(response, info)
            return response

        return await once(self.engine, "ForkSession", request, caller, pb.ForkSessionResponse, run,
                          self._fill_session)

    def _key(self) -> bytes:
        if not self.session_key:
            raise FailedPrecondition("session export/import is off on this server: it needs --session-key-file",
                                     reason="NO_SESSION_KEY")
        return self.session_key

    @rpc_handler
    async def ExportSession(self, request, context):
        session_id = self._session_id(request.session_id, context)
        blob, steps = await self.engine.export_session(session_id, self._key(), self._caller(context))
        return pb.ExportSessionResponse(blob=blob, steps=steps)

    @rpc_handler
    async def ImportSession(self, request, context):
        session_id, caller, key = self._session_id(request.session_id, context), self._caller(context), self._key()

        async def run(note) -> pb.ImportSessionResponse:
            response = pb.ImportSessionResponse()
            info = await self.engine.import_session(request.blob, key, session_id or None, request.ttl_seconds,
                                                    live_check(context), caller,
                                                    note(response) if note is not None else None)
            self._fill_session(response, info)
            return response

        return await once(self.engine, "ImportSession", request, caller, pb.ImportSessionResponse, run,
                          self._fill_session)

    @rpc_handler
    async def ListSessions(self, request, context):
        if request.limit > 1000:
            raise InvalidArgument(f"limit {request.limit} is out of range: allowed 0 (100) to 1000", field="limit")
        infos, total = await self.engine.list_sessions(request.limit or 100, self._caller(context))
        model = self.engine.card.name
        return pb.ListSessionsResponse(
            sessions=[codec.session(i, model) for i in infos], total=total, max_sessions=self.engine.config.max_sessions
        )

    # -- models ---------------------------------------------------------
    def _model(self) -> pb.Model:
        e = self.engine
        return codec.model(e.card, e.runtime, e.config)

    @rpc_handler
    async def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[self._model()])

    @rpc_handler
    async def GetModel(self, request, context):
        if request.name and request.name != self.engine.card.name:
            raise NotFound(f"model {quote(request.name)} is not served here; this server serves "
                           f"{self.engine.card.name!r}", reason="MODEL_NOT_FOUND")
        return pb.GetModelResponse(model=self._model())

    # -- inside the cell (docs/explain.md) ------------------------------
    @rpc_handler
    async def Explain(self, request, context):
        from . import explain, explain_codec

        session_id, caller = self._session_id(request.session_id, context), self._caller(context)
        ids = self.engine.tokens(request.input.tokens, request.input.text)
        explainer = explain.for_engine(self.engine)
        selection = explainer.selection(n_tokens=len(ids), **explain_codec.selection_fields(request))
        result, commit = await explainer.explain(session_id, ids, selection, request.commit, caller)
        try:
            response = explain_codec.response(result, self.engine.vocab)
        except BaseException:
            commit(False)
            raise
        commit_if_live(context, commit)  # with commit: committed as the reply goes out
        return response
