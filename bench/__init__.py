"""Benchmark harness for the lstm.v1 service: ``python -m bench --help``.

Measures, in one run: the service under N concurrent streams, a bare gRPC
echo floor driven by the same client code, and the in-process onnxruntime
ceiling at the same batch sizes; then prints the ratios and the targets.
"""


def aio_run(coro):
    """asyncio.run on uvloop where it is installed (as the service does)."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.run(coro)
    return uvloop.run(coro)
