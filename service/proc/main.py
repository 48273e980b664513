"""``python -m lstm_service`` / ``lstm-serve``: serve a model over gRPC.

With no arguments it serves models/shakespeare on 127.0.0.1:50051, with
--fronts front processes (default: one per core but one) in front of one
engine process (service/proc/supervisor.py); ``--fronts 0`` serves from this one
process. SIGTERM or SIGINT: health goes NOT_SERVING, new calls get
UNAVAILABLE, in-flight calls get --grace seconds to finish, then the
process exits 0.

The supervisor starts its children with this same entry point and
LSTM_ROLE=engine or front in their environment.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

from lstm_service.model.card import ModelCardError, load_card

from . import budget, grpc_log, logs, port_claim, supervisor
from .config import Config, invoked_as, load_config
from ..api.errors import ConfigError

log = logging.getLogger("service")


def event_loop_runner() -> Tuple[asyncio.Runner, str]:
    """An asyncio.Runner on the fastest loop available (uvloop where it is installed: a serving
    dependency on Linux; else asyncio), and that loop's name. The server, its latency probe
    and the benchmark run on it."""
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works too
        return asyncio.Runner(), "asyncio"
    return asyncio.Runner(loop_factory=uvloop.new_event_loop), "uvloop"


async def serve(config: Config, role: str = "", claim: Optional[port_claim.PortClaim] = None) -> int:
    """The single-process server (role ""), or a front process of --fronts N (role "front").
    The single process holds its port's ``claim`` (taken here for --port 0, once the port is known)."""
    from .app import App  # imports onnxruntime; after config so --help stays fast

    try:
        if role == "front":
            from ..link.engine_link import EngineLink, RequestCounts

            index = os.environ.get(supervisor.INDEX_ENV, "0")
            link = EngineLink(os.environ[supervisor.LINK_ENV], f"front-{index}", counts=RequestCounts())
            config = dataclasses.replace(config, http_port=config.http_port if index == "0" else 0)
            app = App(config, link=link)
        else:
            app = App(config)
        await app.start()
        if not role and claim is None:
            claim = port_claim.claim(config.host, app.port)
    except ConfigError as exc:
        logs.event(log, "startup_failed", logging.ERROR, error=str(exc))
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if claim is not None:
        loop.add_reader(claim.fileno(), claim.answer)  # a second server asking who holds the port

    def on_signal(sig: signal.Signals) -> None:
        if role:  # a child: the supervisor's STOP_SIGNAL, after its own stop_requested line
            logs.event(log, "stop_requested", by="supervisor", signal=sig.name)
        else:
            logs.event(log, "stop_requested", by="signal", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT) if not role else (supervisor.STOP_SIGNAL,):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, app.auth.reload)  # re-read --tokens-file
    budget.install(loop)  # LSTM_BUDGET set: SIGUSR2 dumps the cost timers (python -m bench --budget)
    await stop.wait()
    await app.stop()
    if claim is not None:
        loop.remove_reader(claim.fileno())
        claim.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"{invoked_as()}: error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format)
    role = os.environ.get(supervisor.ROLE_ENV, "")
    if config.tls_cert and not role:  # grpc's raw TLS handshake lines -> our events; children inherit it
        grpc_log.relay_stderr()
    if role:  # a child of the supervisor: it alone decides when we stop (supervisor.STOP_SIGNAL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif config.fronts != 0:
        return _supervise(config, argv)
    claim = None
    if not role and config.port:  # the single process: the port is ours alone, or we do not start
        try:
            claim = port_claim.claim_free(config.host, config.port)
        except ConfigError as exc:
            logs.event(log, "startup_failed", logging.ERROR, error=str(exc))
            return 2
    runner, kind = event_loop_runner()
    logs.event(log, "starting", loop=kind, model=config.model, address=config.address, device=config.device,
               role=role or "single")
    with runner:
        if role == "engine":
            from .engine_process import serve_engine

            return runner.run(serve_engine(config, os.environ[supervisor.LINK_ENV]))
        return runner.run(serve(config, role, claim))


def _supervise(config: Config, argv: Optional[Sequence[str]]) -> int:
    fronts = config.fronts if config.fronts > 0 else supervisor.default_fronts()
    try:
        # The model directory is checked here, once: a bad one is one line, not one from every child.
        load_card(Path(config.model)).verify(config.precision)
    except ModelCardError as exc:
        logs.event(log, "startup_failed", logging.ERROR, error=str(exc))
        return 2
    try:
        boss = supervisor.Supervisor(config, list(sys.argv[1:] if argv is None else argv), fronts)
    except ConfigError as exc:
        logs.event(log, "startup_failed", logging.ERROR, error=str(exc))
        return 2
    return boss.run()


if __name__ == "__main__":
    sys.exit(main())
