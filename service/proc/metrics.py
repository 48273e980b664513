"""Prometheus metrics, in a registry of their own (several servers may share a
process in tests). Served over HTTP on --metrics-port when it is set."""
from __future__ import annotations

from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("lstm_requests", "RPCs finished, by method and status code", ["method", "code"],
                                registry=r)
        self.front_requests = Counter("lstm_front_requests", "RPCs finished, by the front process that served "
                                      "them (--fronts N; absent with one process)", ["front"], registry=r)
        self.step_seconds = Histogram(
            "lstm_step_seconds", "Time from queueing a step to its result", buckets=LATENCY_BUCKETS, registry=r
        )
        self.ort_seconds = Histogram(
            "lstm_ort_run_seconds", "onnxruntime run time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("lstm_batch_size", "Steps per onnxruntime run", buckets=BATCH_BUCKETS, registry=r)
        self.tokens = Counter("lstm_tokens", "Tokens fed through the model", registry=r)
        self.sessions = Gauge("lstm_active_sessions", "Sessions held", registry=r)
        self.session_events = Counter(
            "lstm_session_events", "Session ends and starts: open, close, evict, expired", ["kind"], registry=r
        )
        self.queue = Gauge("lstm_queue_depth", "Steps waiting for the model", registry=r)
        self.queue_rejections = Counter("lstm_queue_full", "Steps refused because the queue was full", registry=r)
        self._server: Optional[tuple] = None  # (WSGI server, its thread) while /metrics is served

    def track_sessions(self, count: Callable[[], int]) -> None:
        self.sessions.set_function(count)

    def request(self, method: str, code: str) -> None:
        self.requests.labels(method, code).inc()

    def step(self, seconds: float) -> None:
        self.step_seconds.observe(seconds)

    def ort_run(self, batch: int, length: int, seconds: float) -> None:
        self.ort_seconds.observe(seconds)
        self.batch_size.observe(batch)
        self.tokens.inc(batch * length)

    def session_event(self, kind: str) -> None:
        self.session_events.labels(kind).inc()

    def queue_depth(self, depth: int) -> None:
        self.queue.set(depth)

    def queue_full(self) -> None:
        self.queue_rejections.inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> Optional[int]:
        """Start /metrics on ``port`` (0: do nothing)."""
        if not port:
            return None
        self._server = start_http_server(port, addr=host, registry=self.registry)
        return port

    def close(self) -> None:
        if self._server is not None:
            server, _thread = self._server
            server.shutdown()
            server.server_close()
            self._server = None
