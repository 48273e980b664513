"""A small typed Python client for lstm.v1.LstmService, sync and asyncio.

    from lstm_service.service.client import Client
    with Client("127.0.0.1:50051") as client:
        print(client.generate_text("ROMEO:", max_tokens=100, seed=1))
        with client.stream() as s:                 # a session that lives as long as the stream
            print(s.send("To be, or not").predictions[-1].top[0].text)

Every call that names a session sends its id as ``x-session-id`` metadata, so
a proxy can route it to the replica holding the state. New sessions get a
128-bit random id made here, sent both in the request and in that header,
so the session is created on the replica later calls will reach.
Results are the generated protobuf messages (typed by lstm_pb2.pyi).
"""
from __future__ import annotations

import queue
from typing import AsyncIterator, Iterator, List, Optional, Sequence, Tuple

import grpc

from .proto.lstm.v1 import lstm_pb2 as pb
from .proto.lstm.v1 import lstm_pb2_grpc as pb_grpc
from .session_ids import fork_id, new_session_id

DEFAULT_TARGET = "127.0.0.1:50051"
SESSION_HEADER = "x-session-id"
Metadata = Tuple[Tuple[str, str], ...]


def session_metadata(session_id: str) -> Metadata:
    return ((SESSION_HEADER, session_id),) if session_id else ()


def make_input(text: Optional[str] = None, tokens: Optional[Sequence[int]] = None) -> pb.Input:
    return pb.Input(text=text or "", tokens=list(tokens or ()))


def make_output(top_k: Optional[int] = 5, all_positions: bool = False, logprobs: bool = False) -> pb.OutputOptions:
    out = pb.OutputOptions(all_positions=all_positions, logprobs=logprobs)
    if top_k is not None:
        out.top_k = top_k
    return out


def make_sampling(
    max_tokens: int = 64, temperature: Optional[float] = None, top_k: int = 0, top_p: Optional[float] = None,
    seed: Optional[int] = None, stop: Sequence[str] = (),
) -> pb.SamplingParams:
    s = pb.SamplingParams(max_tokens=max_tokens, top_k=top_k, stop=list(stop))
    if temperature is not None:
        s.temperature = temperature
    if top_p is not None:
        s.top_p = top_p
    if seed is not None:
        s.seed = seed
    return s


def open_request(session_id: str, create: bool, ttl: int, end_with_stream: Optional[bool], output) -> pb.StreamRequest:
    o = pb.OpenStream(session_id=session_id, create=create, ttl_seconds=ttl, output=output)
    if end_with_stream is not None:
        o.end_with_stream = end_with_stream
    return pb.StreamRequest(open=o)


def step_request(text=None, tokens=None, output=None, tag: str = "", start=False, end=False) -> pb.StreamRequest:
    step = pb.StreamStep(input=make_input(text, tokens), tag=tag, start=start, end=end)
    if output is not None:
        step.output.CopyFrom(output)
    return pb.StreamRequest(step=step)


def make_channel(target: str, tls: bool = False, root_certificates: Optional[bytes] = None, aio: bool = False):
    mod = grpc.aio if aio else grpc
    if tls or root_certificates:
        return mod.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root_certificates))
    return mod.insecure_channel(target)


class _Base:
    def __init__(self, target: str, tls: bool, root_certificates: Optional[bytes], timeout: Optional[float], aio: bool):
        self.target = target
        self.timeout = timeout
        self.channel = make_channel(target, tls, root_certificates, aio)
        self.stub = pb_grpc.LstmServiceStub(self.channel)

    def _call(self, name: str, request, session_id: str = ""):
        return getattr(self.stub, name)(request, timeout=self.timeout, metadata=session_metadata(session_id))


class Client(_Base):
    """Blocking client. Errors raise grpc.RpcError (``.code()``, ``.details()``)."""

    def __init__(self, target: str = DEFAULT_TARGET, *, tls: bool = False,
                 root_certificates: Optional[bytes] = None, timeout: Optional[float] = None) -> None:
        super().__init__(target, tls, root_certificates, timeout, aio=False)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def create_session(self, prompt: Optional[str] = None, *, tokens=None, ttl: int = 0,
                       session_id: Optional[str] = None, top_k: Optional[int] = 5) -> pb.CreateSessionResponse:
        session_id = session_id or new_session_id()
        request = pb.CreateSessionRequest(session_id=session_id, ttl_seconds=ttl, output=make_output(top_k))
        if prompt or tokens:
            request.prompt.CopyFrom(make_input(prompt, tokens))
        return self._call("CreateSession", request, session_id)

    def predict(self, session_id: str = "", text: Optional[str] = None, *, tokens=None, top_k: Optional[int] = 5,
                all_positions: bool = False, logprobs: bool = False, start: bool = False) -> pb.StepResult:
        request = pb.PredictRequest(session_id=session_id, input=make_input(text, tokens),
                                    output=make_output(top_k, all_positions, logprobs), start=start)
        return self._call("Predict", request, session_id).result

    def generate(self, prompt: Optional[str] = None, *, session_id: str = "", tokens=None,
                 **sampling) -> Iterator[pb.GenerateResponse]:
        """Stream generated tokens; sampling: max_tokens, temperature, top_k, top_p, seed, stop."""
        request = pb.GenerateRequest(session_id=session_id, sampling=make_sampling(**sampling))
        if prompt or tokens:
            request.prompt.CopyFrom(make_input(prompt, tokens))
        return self._call("Generate", request, session_id)

    def generate_text(self, prompt: Optional[str] = None, **kwargs) -> str:
        return "".join(r.text for r in self.generate(prompt, **kwargs))

    def stream(self, session_id: Optional[str] = None, *, ttl: int = 0, top_k: Optional[int] = 5,
               end_with_stream: Optional[bool] = None) -> "StreamSession":
        """A Stream on an existing session, or (no id) on a new one that ends with the stream."""
        return StreamSession(self, session_id, ttl, make_output(top_k), end_with_stream)

    def get_session(self, session_id: str) -> pb.Session:
        return self._call("GetSession", pb.GetSessionRequest(session_id=session_id), session_id).session

    def reset_session(self, session_id: str) -> pb.Session:
        return self._call("ResetSession", pb.ResetSessionRequest(session_id=session_id), session_id).session

    def delete_session(self, session_id: str) -> int:
        return self._call("DeleteSession", pb.DeleteSessionRequest(session_id=session_id), session_id).steps

    def fork_session(self, session_id: str, new_id: Optional[str] = None, ttl: int = 0) -> pb.Session:
        # The fork is made on the parent's replica: give it the parent's routing key.
        request = pb.ForkSessionRequest(session_id=session_id, new_session_id=new_id or fork_id(session_id),
                                        ttl_seconds=ttl)
        return self._call("ForkSession", request, session_id).session

    def list_sessions(self, limit: int = 100) -> pb.ListSessionsResponse:
        return self._call("ListSessions", pb.ListSessionsRequest(limit=limit))

    def models(self) -> List[pb.Model]:
        return list(self._call("ListModels", pb.ListModelsRequest()).models)

    def model(self, name: str = "") -> pb.Model:
        return self._call("GetModel", pb.GetModelRequest(name=name)).model

    def health(self, service: str = "") -> str:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout).status
        return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


class StreamSession:
    """One bidirectional Stream, driven synchronously: ``send`` returns its answer."""

    def __init__(self, client: Client, session_id, ttl, output, end_with_stream) -> None:
        create = not session_id
        self.session_id = session_id or new_session_id()
        if create and end_with_stream is None:
            end_with_stream = True
        self._requests: "queue.Queue[Optional[pb.StreamRequest]]" = queue.Queue()
        self._requests.put(open_request(self.session_id, create, ttl, end_with_stream, output))
        self._responses = client.stub.Stream(iter(self._requests.get, None), metadata=session_metadata(self.session_id))
        self.session: pb.Session = next(self._responses).opened

    def send(self, text: Optional[str] = None, *, tokens=None, output: Optional[pb.OutputOptions] = None,
             tag: str = "", start: bool = False, end: bool = False) -> pb.StepResult:
        self._requests.put(step_request(text, tokens, output, tag, start, end))
        return next(self._responses).result

    def close(self) -> None:
        self._requests.put(None)
        for _ in self._responses:
            pass

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio client (grpc.aio); the same methods as Client, awaited."""

    def __init__(self, target: str = DEFAULT_TARGET, *, tls: bool = False,
                 root_certificates: Optional[bytes] = None, timeout: Optional[float] = None) -> None:
        super().__init__(target, tls, root_certificates, timeout, aio=True)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def create_session(self, prompt: Optional[str] = None, *, tokens=None, ttl: int = 0,
                             session_id: Optional[str] = None, top_k: Optional[int] = 5) -> pb.CreateSessionResponse:
        session_id = session_id or new_session_id()
        request = pb.CreateSessionRequest(session_id=session_id, ttl_seconds=ttl, output=make_output(top_k))
        if prompt or tokens:
            request.prompt.CopyFrom(make_input(prompt, tokens))
        return await self._call("CreateSession", request, session_id)

    async def predict(self, session_id: str = "", text: Optional[str] = None, *, tokens=None,
                      top_k: Optional[int] = 5, all_positions: bool = False, logprobs: bool = False,
                      start: bool = False) -> pb.StepResult:
        request = pb.PredictRequest(session_id=session_id, input=make_input(text, tokens),
                                    output=make_output(top_k, all_positions, logprobs), start=start)
        return (await self._call("Predict", request, session_id)).result

    async def generate(self, prompt: Optional[str] = None, *, session_id: str = "", tokens=None,
                       **sampling) -> AsyncIterator[pb.GenerateResponse]:
        request = pb.GenerateRequest(session_id=session_id, sampling=make_sampling(**sampling))
        if prompt or tokens:
            request.prompt.CopyFrom(make_input(prompt, tokens))
        async for response in self._call("Generate", request, session_id):
            yield response

    async def get_session(self, session_id: str) -> pb.Session:
        return (await self._call("GetSession", pb.GetSessionRequest(session_id=session_id), session_id)).session

    async def delete_session(self, session_id: str) -> int:
        return (await self._call("DeleteSession", pb.DeleteSessionRequest(session_id=session_id), session_id)).steps

    def stream(self, session_id: Optional[str] = None, *, ttl: int = 0, top_k: Optional[int] = 5,
               end_with_stream: Optional[bool] = None) -> "AsyncStreamSession":
        return AsyncStreamSession(self, session_id, ttl, make_output(top_k), end_with_stream)


class AsyncStreamSession:
    """``async with client.stream() as s: result = await s.send("text")``"""

    def __init__(self, client: AsyncClient, session_id, ttl, output, end_with_stream) -> None:
        self.create = not session_id
        self.session_id = session_id or new_session_id()
        self.end_with_stream = True if self.create and end_with_stream is None else end_with_stream
        self._client, self._ttl, self._output = client, ttl, output
        self.session: Optional[pb.Session] = None

    async def __aenter__(self) -> "AsyncStreamSession":
        self._call = self._client.stub.Stream(metadata=session_metadata(self.session_id))
        await self._call.write(open_request(self.session_id, self.create, self._ttl, self.end_with_stream, self._output))
        self.session = (await self._call.read()).opened
        return self

    async def send(self, text: Optional[str] = None, *, tokens=None, output: Optional[pb.OutputOptions] = None,
                   tag: str = "", start: bool = False, end: bool = False) -> pb.StepResult:
        await self._call.write(step_request(text, tokens, output, tag, start, end))
        response = await self._call.read()  # raises grpc.aio.AioRpcError if the call failed
        if response is grpc.aio.EOF:
            raise ConnectionError("the server ended the stream")
        return response.result

    async def __aexit__(self, *exc) -> None:
        if exc[0] is not None:
            self._call.cancel()
            return
        await self._call.done_writing()
        while await self._call.read() is not grpc.aio.EOF:
            pass
