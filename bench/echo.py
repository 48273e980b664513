"""The bare gRPC floor: ``lstm.v1.LstmService/Stream`` with no model behind it.

    python -m bench.echo --port 50070     # prints "READY 50070" when listening

Same grpc.aio server, same event loop (uvloop where installed), same
request and response message types as the service: every request is
parsed, and every step is answered at once with a StepResult of the shape
the service would send (top-k candidates after the last token, or one
prediction per token with all_positions). What the service adds on top of
this is its own cost: sessions, batching, the model, top-k.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import uuid
from functools import lru_cache
from typing import List

import grpc

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb

from . import aio_run

SERVICE = "lstm.v1.LstmService"
DEFAULT_TOP_K = 5


@lru_cache(maxsize=None)
def _candidates(k: int) -> List[pb.Candidate]:
    out = []
    for i in range(k):
        token = 101 + i  # 'e', 'f', ...: ASCII, so piece and text are both set like the service's
        prob = 0.5 / (i + 1)
        out.append(pb.Candidate(token=token, prob=prob, logprob=-0.69 * (i + 1), piece=bytes([token]), text=chr(token)))
    return out


def _result(session: pb.Session, step: pb.StreamStep, default: pb.OutputOptions) -> pb.StreamResponse:
    inp = step.input
    consumed = len(inp.tokens) if inp.tokens else len(inp.text.encode())
    out = step.output if step.HasField("output") else default
    k = out.top_k if out.HasField("top_k") else DEFAULT_TOP_K
    top = _candidates(k)
    positions = range(consumed) if out.all_positions else (consumed - 1,)
    session.steps = (0 if step.start else session.steps) + consumed
    return pb.StreamResponse(
        result=pb.StepResult(
            session_id=session.id,
            steps=session.steps,
            consumed=consumed,
            predictions=[pb.Prediction(position=p, top=top) for p in positions],
            tag=step.tag,
        )
    )


async def stream(requests, context: grpc.aio.ServicerContext):
    # An async generator over the request iterator, as service/edge/lstm_v1.py's Stream
    # is (A/B runs here: the same server CPU per message as context.read()/write(),
    # within noise).
    requests = requests.__aiter__()
    try:
        first = await requests.__anext__()
    except StopAsyncIteration:
        return
    if first.WhichOneof("kind") != "open":
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message on a stream must be open")
    session = pb.Session(id=first.open.session_id or uuid.uuid4().hex, model="echo", ttl_seconds=600)
    default = first.open.output
    yield pb.StreamResponse(opened=session)
    async for request in requests:
        if request.WhichOneof("kind") != "step":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "open may only be the first message")
        yield _result(session, request.step, default)


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        stream, request_deserializer=pb.StreamRequest.FromString,
        response_serializer=pb.StreamResponse.SerializeToString
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Stream": handler})])
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    aio_run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
