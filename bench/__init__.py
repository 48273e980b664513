"""Benchmark harness for the lstm.v1 service: ``python -m bench --help``.

Measures, in one run: the service under N concurrent streams, a bare gRPC
echo floor driven by the same client code, and the in-process onnxruntime
ceiling at the same batch sizes; then prints the ratios and the targets.
"""


def aio_run(coro):
    """Run ``coro`` on the loop the service runs on (uvloop where installed)."""
    from lstm_service.service.proc.main import event_loop_runner

    runner, _ = event_loop_runner()
    with runner:
        return runner.run(coro)
