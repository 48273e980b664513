"""The gRPC side of the server, in one of two shapes. As the single process
(``--fronts 0``): model card, onnxruntime session, the engine (which owns the
sessions and the batching) and the grpc.aio server with health and
reflection. As a front process of ``--fronts N``: the same server and
servicers over a RemoteEngine, whose engine runs in its own process
(service/proc/supervisor.py, docs/fronts.md). Used by ``python -m lstm_service``
and by the tests.

    app = App(config)            # loads the model (or App(config, link=EngineLink(...)) for a front)
    port = await app.start()     # listening
    await app.stop()             # NOT_SERVING, refuse new calls, drain, stop
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from ..edge import reflection
from ..persist.blob import read_session_key
from .config import Config
from .engine_life import EngineLifecycle, card_of, build_engine
from ..api.engine import EngineApi
from ..core.vocab import served_vocab
from ..link.engine_link import EngineLink, RequestCounts
from ..link.remote_engine import RemoteEngine
from ..api.errors import ConfigError
from ..edge.identity import AuthInterceptor, Authenticator, server_credentials
from .logs import event
from ..edge.safe_decoding import generic_handler
from ..edge.kserve import SERVICE_NAME as KSERVE_SERVICE, KServeServicer, add_to_server as add_kserve, reflection_pool
from ..proto.lstm.v1 import lstm_pb2 as pb
from ..edge.lstm_v1 import LstmServicer

log = logging.getLogger("service")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LstmService"].full_name  # lstm.v1.LstmService
LINK_READY_SECONDS = 30.0  # a front waits this long for the engine's first answer before logging "started"
STORE_SERVICE = "lstm.v1.SnapshotStore"  # health of --state-store; the server itself stays SERVING without it


class App:
    """The gRPC side of the server. Without ``link`` it owns an in-process Engine (the
    single-process server, ``--fronts 0``); with one it is a front process whose engine
    answers over the link (service/link/remote_engine.py) and owns every session's state."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic, runtime=None,
                 link: Optional[EngineLink] = None) -> None:
        self.config = config
        self.card = card_of(config)
        self.link = link
        self.lifecycle: Optional[EngineLifecycle] = None
        if link is None:
            self.lifecycle = build_engine(config, self.card, clock, runtime, self._store_health)
            self.metrics: Any = self.lifecycle.metrics
            self.engine: EngineApi = self.lifecycle.engine
        else:
            self.metrics = link.counts or RequestCounts()
            self.engine = RemoteEngine(config, self.card, served_vocab(self.card), link)
            link.on_health = self._engine_health
        self.auth = Authenticator(config.tokens_file, bool(config.tls_client_ca), config.open_reflection)
        key = read_session_key(config.session_key_file) if config.session_key_file else b""
        self.servicer = LstmServicer(self.engine, self.metrics, self.auth, key)
        self.kserve = KServeServicer(self.engine, self.servicer)  # KServe v2 protocol: same engine, same admission
        self.health = HealthServicer()
        self.server: Optional[grpc.aio.Server] = None
        self.port = 0
        self._stopped = asyncio.Event()  # set once stop() is done (an asyncio.Event binds no loop until used)

    async def start(self) -> int:
        """Bind and serve; the bound port (useful with --port 0)."""
        interceptors = [AuthInterceptor(self.auth)] if self.auth.enabled else []
        # Front processes share the port (SO_REUSEPORT: the kernel spreads connections over
        # them); a lone server does not, so a port in use is an error, not a silent share.
        reuse = 1 if self.link is not None else 0
        server = grpc.aio.server(options=[("grpc.so_reuseport", reuse)], interceptors=interceptors)
        lstm_v1 = pb.DESCRIPTOR.services_by_name["LstmService"]
        server.add_generic_rpc_handlers((generic_handler(self.servicer, lstm_v1),))
        add_kserve(self.kserve, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (SERVICE_NAME, KSERVE_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable(server, names, pool=reflection_pool(names))  # KServe's messages: a pool of their own
        c = self.config
        try:
            if c.tls_cert:
                credentials = server_credentials(c.tls_cert, c.tls_key, c.tls_client_ca)
                self.port = server.add_secure_port(c.address, credentials)
            else:
                self.port = server.add_insecure_port(c.address)
        except RuntimeError as exc:
            raise ConfigError(
                f"cannot listen on {self.config.address}: the port is in use (another server?) or the address "
                "is not on this machine; pick another with --port or LSTM_PORT (0 picks a free one), or --host"
            ) from exc
        if self.lifecycle is not None:
            await self.lifecycle.open()
        else:
            await self._set_health(False)  # grpc's health servicer starts "" at SERVING; not before the engine answers
        await server.start()
        self.server = server
        if self.link is None:
            await self._set_health(True)
            metrics_port = self.metrics.serve(self.config.metrics_port, self.config.host)
        else:
            self.link.start()  # health turns SERVING at the engine's first answer
            await self.link.wait_ready(LINK_READY_SECONDS)  # for the log line; health says the truth either way
            metrics_port = 0  # the engine process serves /metrics, with this front's counts
        http_port = self._serve_http()
        self._warn_if_open()
        event(
            log, "started", process=self.link.name if self.link is not None else "single",
            address=f"{c.host}:{self.port}",
            model=self.card.name, cell=self.card.cell,
            layers=self.card.layers, hidden=self.card.hidden_size, vocab=self.card.vocab_size,
            precision=self.engine.runtime.precision, providers=",".join(self.engine.runtime.providers),
            onnx=str(self.engine.runtime.path),
            max_sessions=c.max_sessions, session_ttl=c.session_ttl, max_tokens_per_message=c.max_tokens_per_message,
            max_batch=c.max_batch, max_batch_delay_ms=c.max_batch_delay_ms, inline_max_ms=c.inline_max_ms,
            queue_size=c.queue_size,
            ort_threads=c.ort_threads, metrics_port=metrics_port or "off", http_port=http_port or "off",
            auth="tokens" if c.tokens_file else ("mtls" if c.tls_client_ca else "off"),
            tls="on" if c.tls_cert else "off",
            state_store=_redact(c.state_store) or "off",
        )
        return self.port

    async def _set_health(self, up: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME, KSERVE_SERVICE):
            await self.health.set(name, status)

    def _engine_health(self, up: bool, store: Optional[bool]) -> None:
        """The link's view of the engine process as this front's health, and the snapshot
        store's as the engine's pongs report it (None: no store, or no engine to ask)."""
        loop = asyncio.get_running_loop()
        if not self.servicer.draining:
            loop.create_task(self._set_health(up))
        if store is not None:
            loop.create_task(self._store_health(store))

    async def _store_health(self, healthy: bool) -> None:
        """The snapshot store's health as its own grpc.health service (STORE_SERVICE): NOT_SERVING
        while Redis is unreachable, when the server keeps serving from memory."""
        ok = health_pb2.HealthCheckResponse.SERVING if healthy else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(STORE_SERVICE, ok)

    http = None  # the explain page's HTTP server (service/web), with --http-port

    def _serve_http(self) -> int:
        if not self.config.http_port:
            return 0
        from ..edge.web.http import ExplainHTTPServer, loopback_target

        try:
            self.http = ExplainHTTPServer(self.config.host, self.config.http_port,
                                          loopback_target(self.config.host, self.port))
        except OSError as exc:
            raise ConfigError(f"cannot listen for HTTP on {self.config.host}:{self.config.http_port}: {exc}; "
                              "pick another with --http-port or LSTM_HTTP_PORT (0: off)") from exc
        return self.http.start()

    def _warn_if_open(self) -> None:
        host = self.config.host
        if not self.auth.enabled and host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "serving on %s without authentication: any client that reaches this address can read, step and "
                "delete every session; set --tokens-file and/or --tls-client-ca (docs/security.md)", host)

    async def stop(self, grace: Optional[float] = None) -> None:
        """Report NOT_SERVING, refuse new calls (UNAVAILABLE), let in-flight
        calls finish for up to ``grace`` seconds, then stop."""
        if self.server is None or self.servicer.draining:
            return
        grace = self.config.grace if grace is None else grace
        began = asyncio.get_running_loop().time()
        self.servicer.start_draining()
        await self.health.enter_graceful_shutdown()
        event(log, "draining", grace=grace, in_flight=self.servicer.in_flight)
        # Keep the port open while in-flight calls finish, so calls arriving
        # meanwhile reach our handlers and get UNAVAILABLE (retryable, with a
        # message); once grpc's own stop has begun, racing calls see CANCELLED.
        await self.servicer.wait_idle(grace)
        if self.lifecycle is not None:
            left = max(0.0, grace - (asyncio.get_running_loop().time() - began))
            await self.lifecycle.drain(min(left, 5.0))  # snapshot what is unsaved (with --state-store)
        left = max(0.0, grace - (asyncio.get_running_loop().time() - began))
        await self.server.stop(left)
        if self.lifecycle is not None:
            await self.lifecycle.close()
        if self.link is not None:
            self.link.close()
        self.metrics.close()
        if self.http is not None:
            self.http.stop()
        event(log, "stopped")
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()


def _redact(url: str) -> str:
    """A store URL without its password, for the log."""
    head, at, tail = url.rpartition("@")
    return f"{head.split('//')[0]}//***@{tail}" if at else url

