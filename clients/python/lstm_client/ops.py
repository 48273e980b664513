"""The client's calls as plain values, and the loops that carry them out.

Every public method is written once (api.py, streams.py) as a generator
that yields operations (a unary call, a message to read, a pause...) and
gets their results back. Client runs these generators with blocking grpc
calls, AsyncClient with grpc.aio awaits, so the two cannot drift apart.
A failed operation is thrown back into the generator as a ClientError,
where retry logic can catch it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Generator, Iterator, List

END = object()  # what Next/Read give at the end of a stream


@dataclass(frozen=True)
class Unary:
    method: str  # an LstmService RPC
    request: Any
    session_id: str = ""


@dataclass(frozen=True)
class Health:
    service: str


@dataclass(frozen=True)
class OpenServerStream:  # -> a handle to read with Next
    method: str
    request: Any
    session_id: str = ""


@dataclass(frozen=True)
class Next:  # -> the next message of a server stream, or END
    handle: Any


@dataclass(frozen=True)
class Write:  # a request on a stream session's bidi call
    request: Any


@dataclass(frozen=True)
class Read:  # -> the next response on a stream session's bidi call, or END
    pass


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:  # a streaming method's next item for its caller
    value: Any


Steps = Generator[Any, Any, Any]


def run(steps: Steps, perform: Callable[[Any], Any]) -> Any:
    """Drive a method to its return value with a blocking ``perform(op)``."""
    result, error = None, None
    while True:
        try:
            op = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as stop:
            return stop.value
        result, error = None, None
        try:
            result = perform(op)
        except Exception as exc:  # thrown into the method: it may retry or let it propagate
            error = exc


def run_stream(steps: Steps, perform: Callable[[Any], Any]) -> Iterator[Any]:
    """Drive a streaming method, yielding what it emits; cancels its calls if the caller stops early."""
    handles: List[Any] = []
    result, error = None, None
    try:
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(result)
            except StopIteration:
                return
            result, error = None, None
            if isinstance(op, Emit):
                yield op.value
                continue
            try:
                result = perform(op)
            except Exception as exc:
                error = exc
            if isinstance(op, OpenServerStream) and error is None:
                handles.append(result)
    finally:
        steps.close()
        for handle in handles:
            handle.cancel()  # a no-op on a finished call


async def arun(steps: Steps, perform: Callable[[Any], Any]) -> Any:
    """``run`` for grpc.aio: ``await perform(op)``."""
    result, error = None, None
    while True:
        try:
            op = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as stop:
            return stop.value
        result, error = None, None
        try:
            result = await perform(op)
        except Exception as exc:
            error = exc


async def arun_stream(steps: Steps, perform: Callable[[Any], Any]) -> AsyncIterator[Any]:
    """``run_stream`` for grpc.aio."""
    handles: List[Any] = []
    result, error = None, None
    try:
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(result)
            except StopIteration:
                return
            result, error = None, None
            if isinstance(op, Emit):
                yield op.value
                continue
            try:
                result = await perform(op)
            except Exception as exc:
                error = exc
            if isinstance(op, OpenServerStream) and error is None:
                handles.append(result)
    finally:
        steps.close()
        for handle in handles:
            handle.cancel()


def collect(steps: Steps) -> Steps:
    """Run a streaming method inside another: pass its operations through, return what it emitted."""
    items: List[Any] = []
    result, error = None, None
    while True:
        try:
            op = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration:
            return items
        result, error = None, None
        if isinstance(op, Emit):
            items.append(op.value)
            continue
        try:
            result = yield op
        except Exception as exc:
            error = exc


def method(kind: str):
    """Mark a generator as a public method: kind "unary" returns a value, "stream" emits items."""
    def mark(fn):
        fn.__lstm_kind__ = kind
        return fn
    return mark


def sync_method(fn: Callable, kind: str) -> Callable:
    """The blocking form of a marked method: runs it with ``self._perform``."""
    if kind == "stream":
        @functools.wraps(fn)
        def streaming(self, *args, **kwargs):
            return run_stream(fn(self, *args, **kwargs), self._perform)
        return streaming

    @functools.wraps(fn)
    def blocking(self, *args, **kwargs):
        return run(fn(self, *args, **kwargs), self._perform)
    return blocking


def async_method(fn: Callable, kind: str) -> Callable:
    """The asyncio form: a coroutine, or for "stream" an async iterator (``async for``)."""
    if kind == "stream":
        @functools.wraps(fn)
        def streaming(self, *args, **kwargs):
            return arun_stream(fn(self, *args, **kwargs), self._perform)
        return streaming

    @functools.wraps(fn)
    async def awaitable(self, *args, **kwargs):
        return await arun(fn(self, *args, **kwargs), self._perform)
    return awaitable
