"""The gRPC edge: decode and validate requests, call the engine, encode
answers, and map the project's exceptions to status codes in one place
(``_rpc`` below). No model or state logic lives here.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Optional

import grpc

from . import codec
from .engine import Engine, StepOptions
from .errors import InvalidArgument, NotFound, ServiceError, Unavailable
from .proto.lstm.v1 import lstm_pb2 as pb
from .proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

log = logging.getLogger("service.server")
SESSION_HEADER = "x-session-id"
CODES = {code.name: code for code in grpc.StatusCode}


def _rpc(method):
    """Run a handler; turn ServiceError into its status; count every outcome."""
    name = method.__name__

    @functools.wraps(method)
    async def handler(self: "LstmServicer", request, context):
        code = "OK"
        try:
            if self.draining:
                raise Unavailable("server is shutting down; retry, the next attempt may reach another replica")
            return await method(self, request, context)
        except ServiceError as exc:
            code = exc.code
            trailers = (("retry-after-ms", str(exc.retry_after_ms)),) if exc.retry_after_ms else ()
            await context.abort(CODES[exc.code], exc.message, trailers)
        except asyncio.CancelledError:
            remaining = context.time_remaining()
            code = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
            raise
        except grpc.aio.AbortError:
            code = "ABORTED_BY_HANDLER"
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: say so, keep serving
            code = "INTERNAL"
            log.exception("unexpected error in %s", name)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name}: {type(exc).__name__}: {exc}")
        finally:
            if self.metrics:
                self.metrics.request(name, code)

    return handler


class LstmServicer(pb_grpc.LstmServiceServicer):
    def __init__(self, engine: Engine, metrics=None) -> None:
        self.engine = engine
        self.store = engine.store
        self.metrics = metrics
        self.draining = False

    # -- helpers --------------------------------------------------------
    def _session_id(self, field: str, context, required: bool = True) -> str:
        """The id from the request field, else from x-session-id metadata."""
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == SESSION_HEADER:
                header = value
        if field and header and field != header:
            raise InvalidArgument(f"session_id {field!r} and {SESSION_HEADER} metadata {header!r} disagree")
        session_id = field or header
        if required and not session_id:
            raise InvalidArgument(f"a session id is required (field session_id or {SESSION_HEADER} metadata)")
        return session_id

    def _options(self, output: Optional[pb.OutputOptions]) -> StepOptions:
        if output is None:
            return self.engine.step_options(None, False, False)
        top_k = output.top_k if output.HasField("top_k") else None
        return self.engine.step_options(top_k, output.all_positions, output.logprobs)

    def _input(self, message: pb.Input, what: str = "input"):
        return self.engine.tokens(message.tokens, message.text, what)

    def _session(self, session) -> pb.Session:
        return codec.session(session, self.store.clock(), self.engine.card.name)

    # -- steps ----------------------------------------------------------
    @_rpc
    async def Stream(self, request_iterator, context):
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("kind") != "open":
            raise InvalidArgument("the first message on a stream must be `open` (attach to or create a session)")
        o = first.open
        defaults = self._options(o.output if o.HasField("output") else None)
        session_id = self._session_id(o.session_id, context, required=not o.create)
        if o.create:
            session = self.store.create(session_id or None, o.ttl_seconds)
            self.store.acquire(session.id)
        else:
            session = self.store.acquire(session_id)
        end_with_stream = o.end_with_stream if o.HasField("end_with_stream") else (o.create and not session_id)
        engine, vocab = self.engine, self.engine.vocab
        try:
            await context.write(pb.StreamResponse(opened=self._session(session)))
            while True:
                request = await context.read()
                if request is grpc.aio.EOF:
                    return
                if request.WhichOneof("kind") != "step":
                    raise InvalidArgument("`open` may only be the first message; send `step` messages after it")
                step = request.step
                options = self._options(step.output) if step.HasField("output") else defaults
                ids = engine.tokens(step.input.tokens, step.input.text)
                result = await engine.step(session, ids, options, start=step.start)
                if step.end:
                    self.store.close(session, "was ended by its stream (step.end)")
                await context.write(pb.StreamResponse(result=codec.step_result(result, vocab, step.tag)))
        finally:
            self.store.release(session)
            if end_with_stream:
                self.store.close(session, "ended with its stream")

    @_rpc
    async def Predict(self, request, context):
        session_id = self._session_id(request.session_id, context, required=False)
        options = self._options(request.output if request.HasField("output") else None)
        ids = self._input(request.input)
        result = await self.engine.predict(session_id, ids, options, start=request.start)
        return pb.PredictResponse(result=codec.step_result(result, self.engine.vocab))

    @_rpc
    async def Generate(self, request, context):
        session_id = self._session_id(request.session_id, context, required=False)
        prompt = None
        if len(request.prompt.tokens) or request.prompt.text:
            prompt = self._input(request.prompt, "prompt")
        s = request.sampling
        options = self.engine.generate_options(
            s.max_tokens,
            s.temperature if s.HasField("temperature") else None,
            s.top_k,
            s.top_p if s.HasField("top_p") else None,
            s.seed if s.HasField("seed") else None,
            list(s.stop),
        )
        async with contextlib.aclosing(self.engine.generate(session_id, prompt, options)) as tokens:
            async for g in tokens:
                await context.write(codec.generated(g, session_id))

    # -- sessions -------------------------------------------------------
    @_rpc
    async def CreateSession(self, request, context):
        session_id = self._session_id(request.session_id, context, required=False)
        prompt = None
        if len(request.prompt.tokens) or request.prompt.text:
            prompt = self._input(request.prompt, "prompt")
        options = self._options(request.output if request.HasField("output") else None)
        session, result = await self.engine.create(session_id or None, request.ttl_seconds, prompt, options)
        response = pb.CreateSessionResponse(session=self._session(session))
        if result is not None:
            response.result.CopyFrom(codec.step_result(result, self.engine.vocab))
        return response

    @_rpc
    async def GetSession(self, request, context):
        session = self.store.get(self._session_id(request.session_id, context))
        return pb.GetSessionResponse(session=self._session(session))

    @_rpc
    async def ResetSession(self, request, context):
        session = self.store.reset(self._session_id(request.session_id, context))
        return pb.ResetSessionResponse(session=self._session(session))

    @_rpc
    async def DeleteSession(self, request, context):
        session = self.store.delete(self._session_id(request.session_id, context))
        return pb.DeleteSessionResponse(steps=session.steps)

    @_rpc
    async def ForkSession(self, request, context):
        source = self._session_id(request.session_id, context)
        fork = self.store.fork(source, request.new_session_id or None, request.ttl_seconds)
        return pb.ForkSessionResponse(session=self._session(fork))

    @_rpc
    async def ListSessions(self, request, context):
        if request.limit > 1000:
            raise InvalidArgument(f"limit {request.limit} is out of range: allowed 0 (100) to 1000")
        sessions = self.engine.sessions(request.limit or 100)
        return pb.ListSessionsResponse(
            sessions=[self._session(s) for s in sessions], total=len(self.store), max_sessions=self.store.max_sessions
        )

    # -- models ---------------------------------------------------------
    def _model(self) -> pb.Model:
        e = self.engine
        return codec.model(e.card, e.runtime, e.config)

    @_rpc
    async def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[self._model()])

    @_rpc
    async def GetModel(self, request, context):
        if request.name and request.name != self.engine.card.name:
            raise NotFound(f"model {request.name!r} is not served here; this server serves {self.engine.card.name!r}")
        return pb.GetModelResponse(model=self._model())
