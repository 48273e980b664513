"""Prometheus metrics of the snapshot store, registered in the service's own
registry (``Metrics.registry``) when one is given; without one, nothing.
Kept apart from service/proc/metrics.py so the store adds its series without
touching the step path's metrics."""
from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

WRITE_KINDS = {"written", "deleted", "dropped", "superseded", "failed", "fenced"}
LOAD_KINDS = {"hit", "hit_pending", "miss", "unavailable", "corrupt"}


class StoreMetrics:
    def __init__(self, metrics: Any, store: Any) -> None:
        registry = getattr(metrics, "registry", None)
        self.enabled = registry is not None
        if not self.enabled:
            return
        self.up_gauge = Gauge("lstm_state_store_up", "1 while the snapshot store (Redis) answers, else 0",
                              registry=registry)
        self.outages = Counter("lstm_state_store_outages", "Times the snapshot store became unreachable",
                               registry=registry)
        self.writes = Counter("lstm_snapshot_writes", "Snapshot writes by outcome: written, deleted, "
                              "dropped (queue full), superseded (a newer one replaced it), failed, "
                              "fenced (the lease moved)",
                              ["result"], registry=registry)
        self.loads = Counter("lstm_snapshot_loads", "Snapshot loads by outcome: hit, hit_pending, miss, "
                             "unavailable (Redis down or slow), corrupt", ["result"], registry=registry)
        pending = Gauge("lstm_snapshot_queue_depth", "Snapshot writes waiting for Redis", registry=registry)
        pending.set_function(lambda: store.pending)

    def up(self, healthy: bool) -> None:
        if self.enabled:
            self.up_gauge.set(1 if healthy else 0)

    def count(self, kind: str) -> None:
        if not self.enabled:
            return
        if kind == "outage":
            self.outages.inc()
        elif kind in WRITE_KINDS:
            self.writes.labels(kind).inc()
        elif kind in LOAD_KINDS:
            self.loads.labels(kind).inc()
