"""``python -m lstm_service`` / ``lstm-serve``: serve a model over gRPC.

With no arguments it serves models/shakespeare on 127.0.0.1:50051.
SIGTERM or SIGINT: health goes NOT_SERVING, new calls get UNAVAILABLE,
in-flight calls get --grace seconds to finish, then the process exits 0.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Optional, Sequence

from . import logs
from .config import Config, load_config
from .errors import ConfigError
from .loops import event_loop_runner

log = logging.getLogger("service")


async def serve(config: Config) -> int:
    from .app import App  # imports onnxruntime; after config so --help stays fast

    try:
        app = App(config)
        await app.start()
    except ConfigError as exc:
        logs.event(log, "startup_failed", logging.ERROR, error=str(exc))
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        logs.event(log, "signal", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, app.auth.reload)  # re-read --tokens-file
    await stop.wait()
    await app.stop()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"python -m lstm_service: error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format)
    runner, kind = event_loop_runner()
    logs.event(log, "starting", loop=kind, model=config.model, address=config.address, device=config.device)
    with runner:
        return runner.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
