"""The gRPC edge: decode and validate requests, call the engine, encode
answers, and map the project's exceptions to status codes in one place
(``_rpc`` below). No model or state logic lives here.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
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


def _status(name: str, context, exc: BaseException):
    """(code name, abort arguments or None to re-raise) for an exception out of a handler."""
    if isinstance(exc, ServiceError):
        trailers = (("retry-after-ms", str(exc.retry_after_ms)),) if exc.retry_after_ms else ()
        return exc.code, (CODES[exc.code], exc.message, trailers)
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        return ("DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"), None
    if isinstance(exc, grpc.aio.AbortError):
        return "ABORTED_BY_HANDLER", None
    if isinstance(exc, Exception):  # a bug: say so, keep serving
        log.error("unexpected error in %s", name, exc_info=exc)
        return "INTERNAL", (grpc.StatusCode.INTERNAL, f"internal error in {name}: {type(exc).__name__}: {exc}", ())
    return "UNKNOWN", None


def _rpc(method):
    """Wrap a handler (coroutine or async generator): refuse while draining,
    turn ServiceError into its status, count every outcome."""
    name = method.__name__

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_handler(self: "LstmServicer", request, context):
            code, admitted = "OK", False
            try:
                admitted = self._admit()
                async for response in method(self, request, context):
                    yield response
            except BaseException as exc:
                code, abort = _status(name, context, exc)
                if abort is None:
                    raise
                await context.abort(*abort)
            finally:
                self._finish(name, code, admitted)

        return stream_handler

    @functools.wraps(method)
    async def handler(self: "LstmServicer", request, context):
        code, admitted = "OK", False
        try:
            admitted = self._admit()
            return await method(self, request, context)
        except BaseException as exc:
            code, abort = _status(name, context, exc)
            if abort is None:
                raise
            await context.abort(*abort)
        finally:
            self._finish(name, code, admitted)

    return handler


class LstmServicer(pb_grpc.LstmServiceServicer):
    def __init__(self, engine: Engine, metrics=None) -> None:
        self.engine = engine
        self.store = engine.store
        self.metrics = metrics
        self.draining = False
        self.in_flight = 0  # calls admitted and not finished

    # -- admission and draining -----------------------------------------
    def _admit(self) -> bool:
        if self.draining:
            raise Unavailable("server is shutting down; retry, the next attempt may reach another replica")
        self.in_flight += 1
        return True

    def _finish(self, name: str, code: str, admitted: bool) -> None:
        if admitted:
            self.in_flight -= 1
        if self.metrics:
            self.metrics.request(name, code)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every admitted call to finish; True if they did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self.in_flight

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
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
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
            yield pb.StreamResponse(opened=self._session(session))
            async for request in requests:
                if request.WhichOneof("kind") != "step":
                    raise InvalidArgument("`open` may only be the first message; send `step` messages after it")
                step = request.step
                options = self._options(step.output) if step.HasField("output") else defaults
                inp = step.input
                ids = engine.tokens(inp.tokens, inp.text)
                result = await engine.step(session, ids, options, start=step.start)
                if step.end:
                    self.store.close(session, "was ended by its stream (step.end)")
                response = pb.StreamResponse()
                codec.step_result(response.result, result, vocab, step.tag)
                yield response
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
        response = pb.PredictResponse()
        codec.step_result(response.result, result, self.engine.vocab)
        return response

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
                yield codec.generated(g, session_id)

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
            codec.step_result(response.result, result, self.engine.vocab)
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
