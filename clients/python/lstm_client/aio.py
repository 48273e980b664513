"""The asyncio client (grpc.aio): AsyncClient and its AsyncStreamSession.

    async with AsyncClient("127.0.0.1:50051") as client:
        print(await client.generate_text("ROMEO:", max_tokens=100, seed=1))
        async for r in client.generate("ROMEO:", max_tokens=10):
            print(r.text, end="")
        async with client.stream() as s:
            result = await s.send("To be")

The same methods, names and signatures as Client (both come from api.py);
each is awaited, except ``generate``, which is iterated with ``async for``.
"""
from __future__ import annotations

import asyncio
from typing import Any

import grpc

from .api import Api
from .errors import ClientError
from .ops import END, Health, Next, OpenServerStream, Read, Sleep, Unary, Write, arun, async_method
from .requests import session_metadata
from .streams import StreamApi


class AsyncStreamSession(StreamApi):
    """``async with client.stream() as s: result = await s.send("text")``"""

    _wrap = staticmethod(async_method)
    _call: Any = None

    async def _perform(self, op: Any) -> Any:
        try:
            if isinstance(op, Write):
                return await self._call.write(op.request)
            if isinstance(op, Read):
                response = await self._call.read()
                return END if response is grpc.aio.EOF else response
        except grpc.RpcError as exc:
            raise ClientError.from_rpc_error(exc) from None
        raise TypeError(f"not a stream operation: {op!r}")

    async def close(self) -> None:
        """End the stream after the answers in flight (a session made for it ends too)."""
        try:
            await self._call.done_writing()
            while await self._call.read() is not grpc.aio.EOF:
                pass
        except grpc.RpcError as exc:
            raise ClientError.from_rpc_error(exc) from None

    async def __aenter__(self) -> "AsyncStreamSession":
        self._call = self._client.stub.Stream(metadata=session_metadata(self.session_id))
        await arun(self._open(), self._perform)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self._call.cancel()
            return
        await self.close()


class AsyncClient(Api):
    """asyncio client: Client's methods, awaited. Errors raise ClientError."""

    _wrap = staticmethod(async_method)
    _stream_class = AsyncStreamSession
    _aio = True

    async def _perform(self, op: Any) -> Any:
        try:
            return await self._do(op)
        except grpc.RpcError as exc:
            raise await asyncio.to_thread(self._error, exc) from None  # it may probe the server (blocking)

    async def _do(self, op: Any) -> Any:
        if isinstance(op, Unary):
            rpc = getattr(self.stub, op.method)
            return await rpc(op.request, timeout=self.timeout, metadata=session_metadata(op.session_id))
        if isinstance(op, OpenServerStream):
            rpc = getattr(self.stub, op.method)
            return rpc(op.request, timeout=self.timeout, metadata=session_metadata(op.session_id))
        if isinstance(op, Next):
            response = await op.handle.read()
            return END if response is grpc.aio.EOF else response
        if isinstance(op, Sleep):
            return await asyncio.sleep(op.seconds)
        if isinstance(op, Health):
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            request = health_pb2.HealthCheckRequest(service=op.service)
            status = (await health_pb2_grpc.HealthStub(self.channel).Check(request, timeout=self.timeout)).status
            return health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        raise TypeError(f"not a client operation: {op!r}")

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
