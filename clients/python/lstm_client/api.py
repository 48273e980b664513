"""Every public method of Client and AsyncClient, written once.

Each method is a generator of operations (ops.py); Client and AsyncClient
subclass Api and turn each one into a blocking or an ``async`` method with
the same name and signature (``_wrap``). Results are the generated protobuf
messages (typed by proto/lstm/v1/lstm_pb2.pyi); errors are ClientError.
"""
from __future__ import annotations

import uuid
from itertools import count
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import grpc

from .errors import ClientError
from .ops import END, Emit, Health, Next, OpenServerStream, Sleep, Steps, Unary, collect, method
from .proto.lstm.v1 import lstm_pb2 as pb
from .proto.lstm.v1 import lstm_pb2_grpc as pb_grpc
from .requests import make_input, make_output, make_sampling, set_expected_steps
from .retry import LOST_REPLY, RetryPolicy, as_policy
from .session_ids import new_session_id
from .credentials import make_channel
from .targets import DEFAULT_TARGET, normalize_target
from .tls_probe import with_tls_hint

Retry = Union[bool, RetryPolicy, None]


class Api:
    _aio = False  # grpc.aio channel (AsyncClient) or a blocking one (Client)

    def __init__(self, target: str = DEFAULT_TARGET, *, tls: bool = False, root_certificates: Optional[bytes] = None,
                 timeout: Optional[float] = None, retry: Retry = False, token: Optional[str] = None,
                 client_certificate: Optional[bytes] = None, client_key: Optional[bytes] = None) -> None:
        """``target`` host[:port] (port 50051 when left out); ``timeout`` per call, seconds;
        ``retry`` True or a RetryPolicy: resend after refusals and lost replies (retry.py);
        ``token`` a bearer token sent on every call; ``root_certificates`` (PEM) to trust for
        TLS, ``client_certificate``/``client_key`` (PEM) for mutual TLS."""
        self.target = normalize_target(target)
        self.timeout = timeout
        self.retry = as_policy(retry)  # the default; predict/generate can override it per call
        self.channel = make_channel(self.target, tls, root_certificates, aio=self._aio, token=token,
                                    client_certificate=client_certificate, client_key=client_key)
        self.plaintext = not (tls or root_certificates or client_certificate)  # for the hint at a TLS server
        self.stub = pb_grpc.LstmServiceStub(self.channel)
        # session id -> the count this client last saw, after a call that ended with more kept than
        # it read (a Generate closed early or cut, a stream cut): the next call on that session
        # carries it as expected_steps, and the server rewinds there (docs/errors.md)
        self.seen: Dict[str, int] = {}

    def _carry_seen(self, session_id: str, request) -> None:
        if session_id and not request.HasField("expected_steps"):
            seen = self.seen.pop(session_id, None)
            if seen is not None:
                request.expected_steps = seen

    def _request_id(self, request, retry: Retry = None) -> None:
        """With a retry policy every mutating call carries a request id, so a resend applies once."""
        policy = as_policy(retry) if retry is not None else self.retry
        if policy is not None and not request.request_id:
            request.request_id = str(uuid.uuid4())

    def _error(self, exc: grpc.RpcError) -> ClientError:
        """A failed call as ClientError; at a TLS server from a plaintext channel, saying so (tls_probe.py)."""
        error = ClientError.from_rpc_error(exc)
        return with_tls_hint(error, self.target) if self.plaintext else error

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, fn in vars(Api).items():
            kind = getattr(fn, "__lstm_kind__", None)
            if kind:
                setattr(cls, name, cls._wrap(fn, kind))

    @staticmethod
    def _wrap(fn: Callable, kind: str) -> Callable:
        raise NotImplementedError

    @method("unary")
    def create_session(self, prompt: Optional[str] = None, *, tokens: Optional[Sequence[int]] = None, ttl: int = 0,
                       session_id: Optional[str] = None, top_k: Optional[int] = 5) -> pb.CreateSessionResponse:
        """A new session (an id made here unless given), optionally fed a prompt."""
        session_id = session_id or new_session_id()
        request = pb.CreateSessionRequest(session_id=session_id, ttl_seconds=ttl, output=make_output(top_k))
        if prompt or tokens:
            request.prompt.CopyFrom(make_input(prompt, tokens))
        return (yield from self._once("CreateSession", request, session_id))

    @method("unary")
    def predict(self, session_id: str = "", text: Optional[str] = None, *, tokens: Optional[Sequence[int]] = None,
                top_k: Optional[int] = 5, all_positions: bool = False, logprobs: bool = False, start: bool = False,
                expected_steps: Optional[int] = None, retry: Retry = None) -> pb.StepResult:
        """Feed text or tokens to a session (none: stateless) and get the next-token predictions."""
        request = pb.PredictRequest(session_id=session_id, input=make_input(text, tokens),
                                    output=make_output(top_k, all_positions, logprobs), start=start)
        set_expected_steps(request, expected_steps)
        self._carry_seen(session_id, request)
        self._request_id(request, retry)

        def attempt() -> Steps:
            return (yield Unary("Predict", request, session_id))

        return (yield from self._with_retry(attempt, request, session_id, retry)).result

    @method("stream")
    def generate(self, prompt: Optional[str] = None, *, session_id: str = "", tokens: Optional[Sequence[int]] = None,
                 max_tokens: int = 64, temperature: Optional[float] = None, top_k: int = 0,
                 top_p: Optional[float] = None, seed: Optional[int] = None, stop: Sequence[str] = (),
                 expected_steps: Optional[int] = None, retry: Retry = None) -> Steps:
        """Sample tokens server-side; yields each GenerateResponse as it is made."""
        request = pb.GenerateRequest(session_id=session_id, sampling=make_sampling(
            max_tokens, temperature, top_k, top_p, seed, stop))
        if prompt or tokens:
            request.prompt.CopyFrom(make_input(prompt, tokens))
        set_expected_steps(request, expected_steps)
        self._carry_seen(session_id, request)
        # With a retry policy it carries a request id: a resend after a lost reply generates
        # nothing again, the server replays the tokens the first send kept (docs/errors.md).
        self._request_id(request, retry)

        def attempt() -> Steps:  # a lost reply is recoverable only before the first token arrives
            handle = yield OpenServerStream("Generate", request, session_id)
            return handle, (yield Next(handle))

        handle, response = yield from self._with_retry(attempt, request, session_id, retry)
        # The server keeps each token as it writes it, ahead of what is read: if this iterator is
        # closed early or the call fails, the next call on the session rewinds to the last token
        # yielded (or to where the call began, if none was).
        seen: Optional[int] = request.expected_steps if request.HasField("expected_steps") else None
        finished = False
        policy = as_policy(retry) if retry is not None else self.retry
        cuts = 0
        try:
            while True:
                try:
                    while response is not END:
                        seen = response.steps
                        finished = response.finish_reason != pb.FINISH_REASON_UNSPECIFIED
                        yield Emit(response)
                        response = yield Next(handle)
                    finished = True
                    break
                except ClientError as error:
                    # Cut mid-way (a lost connection): resent with its request id, the server replays
                    # every token the first send kept; those already yielded are skipped. A replay
                    # that ends without a finish reason means the first send was cut there too.
                    if policy is None or not request.request_id or error.code() not in LOST_REPLY \
                            or not policy.may_retry(error, cuts):
                        raise
                    yield Sleep(policy.pause(error, cuts))
                    cuts += 1
                    handle, response = yield from self._with_retry(attempt, request, session_id, retry)
                    while response is not END and seen is not None and response.steps <= seen:
                        response = yield Next(handle)
        finally:
            if session_id and not finished and seen is not None:
                self.seen[session_id] = seen

    @method("unary")
    def generate_text(self, prompt: Optional[str] = None, *, echo: bool = True, **options: Any) -> str:
        """The prompt (unless echo=False) and the generated text; ``options`` are generate's."""
        responses = yield from collect(Api.generate(self, prompt, **options))
        return ((prompt or "") if echo else "") + "".join(r.text for r in responses)

    @method("unary")
    def get_session(self, session_id: str) -> pb.Session:
        return (yield Unary("GetSession", pb.GetSessionRequest(session_id=session_id), session_id)).session

    @method("unary")
    def reset_session(self, session_id: str) -> pb.Session:
        request = pb.ResetSessionRequest(session_id=session_id)
        return (yield from self._once("ResetSession", request, session_id)).session

    @method("unary")
    def delete_session(self, session_id: str) -> int:
        """Delete a session; returns the steps it had."""
        request = pb.DeleteSessionRequest(session_id=session_id)
        return (yield from self._once("DeleteSession", request, session_id)).steps

    def _once(self, method_name: str, request, session_id: str) -> Steps:
        """A call that changes a session record; with a retry policy it carries a request id and
        is resent, the same request, after a refusal or a lost reply: it applies once."""
        self._request_id(request)
        policy = self.retry
        for n in count():
            try:
                return (yield Unary(method_name, request, session_id))
            except ClientError as error:
                if policy is None or not policy.may_retry(error, n):
                    raise
                yield Sleep(policy.pause(error, n))

    @method("unary")
    def fork_session(self, session_id: str, new_id: Optional[str] = None, ttl: int = 0) -> pb.Session:
        """A copy of a session's state under ``new_id``, or (none) an id the server makes from the
        parent's routing key, so a session-affine proxy routes the fork where its state is."""
        request = pb.ForkSessionRequest(session_id=session_id, new_session_id=new_id or "", ttl_seconds=ttl)
        return (yield from self._once("ForkSession", request, session_id)).session

    @method("unary")
    def list_sessions(self, limit: int = 100) -> pb.ListSessionsResponse:
        return (yield Unary("ListSessions", pb.ListSessionsRequest(limit=limit)))

    @method("unary")
    def models(self) -> List[pb.Model]:
        return list((yield Unary("ListModels", pb.ListModelsRequest())).models)

    @method("unary")
    def model(self, name: str = "") -> pb.Model:
        return (yield Unary("GetModel", pb.GetModelRequest(name=name))).model

    @method("unary")
    def health(self, service: str = "") -> str:
        """grpc.health.v1 status name: SERVING, NOT_SERVING, ..."""
        return (yield Health(service))

    def stream(self, session_id: Optional[str] = None, *, ttl: int = 0, top_k: Optional[int] = 5,
               end_with_stream: Optional[bool] = None):
        """A Stream on an existing session, or (no id) on a new one that ends with the stream."""
        return self._stream_class(self, session_id, ttl, make_output(top_k), end_with_stream)

    _stream_class: Any = None

    def _with_retry(self, attempt: Callable[[], Steps], request, session_id: str, retry: Retry) -> Steps:
        """Run one send (``attempt``); with a retry policy, resend after a refusal, or after a lost
        reply if the server's step count shows the step did not apply (see retry.py)."""
        policy = as_policy(retry) if retry is not None else self.retry
        if policy is None:
            return (yield from attempt())
        if session_id and not request.HasField("expected_steps"):
            request.expected_steps = yield from self._session_steps(session_id, policy)
        for n in count():
            try:
                return (yield from attempt())
            except ClientError as error:
                if n > 0 and error.session_steps is not None:
                    error.step_applied = error.session_steps != request.expected_steps  # an earlier send applied
                if not policy.may_retry(error, n):
                    raise
                yield Sleep(policy.pause(error, n))
                # With a request id the resend is safe whatever happened: the server answers it from
                # what the first send kept, if it applied. Without one, only if the count shows it did not.
                if session_id and error.code() in LOST_REPLY and not request.request_id:
                    steps = yield from self._session_steps(session_id, policy)
                    if steps != request.expected_steps:
                        error.step_applied = True
                        raise error

    def _session_steps(self, session_id: str, policy: RetryPolicy) -> Steps:
        """The session's step count, asked until the server answers (within the policy)."""
        for n in count():
            try:
                reply = yield Unary("GetSession", pb.GetSessionRequest(session_id=session_id), session_id)
                return reply.session.steps
            except ClientError as error:
                if not policy.may_retry(error, n):
                    raise
                yield Sleep(policy.pause(error, n))
