"""Session snapshots in Redis (``--state-store redis://host:port/db``).

One key per session, ``lstm:session:<owner>/<id>`` (ids are per principal,
service/core/session_ids.py; an id never holds ``/``, so the last one splits),
holding the binary snapshot of service/persist/snapshot_format.py; the key expires
with the session's idle TTL (PX), so Redis forgets what the service would
have expired anyway.

Keys written before ids were per principal, ``lstm:session:<id>``, are
moved to the new form by one background pass at open
(service/persist/snapshot_migration.py); until then a load asks for the new key and
the old one in one MGET (one round trip either way), takes the old one only
if its recorded owner is the caller's namespace, and moves it (save new,
delete old).

The step path never waits for Redis: ``save`` and ``delete`` put the latest
write for an id into a bounded map that one background task drains (several
writes per round trip); a newer write for the same id replaces the pending
one, and when the map is full the oldest pending save is dropped (counted).
With leases (service/persist/leases.py) a write carries its session's (epoch,
sequence) and goes out as the lease's WRITE script: refused (``on_fenced``) once
the lease is another replica's. ``load`` waits at most LOAD_TIMEOUT and answers None when Redis is down or
slow. Redis unreachable, at start or later: ``healthy`` goes False with one
log line per outage, a prober pings until it answers, and pending writes
wait for it (still bounded). Everything here runs on the event loop thread.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, OrderedDict
from typing import Callable, Dict, Optional, Tuple, Union
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ..api.errors import ConfigError
from ..proc.logs import event
from ..core.session_ids import SessionName
from .snapshot_format import (
    Snapshot,
    SnapshotFormatError,
    decode_snapshot,
    encode_snapshot,
)
from .leases import lease_key
from .store_metrics import StoreMetrics

__all__ = ["Snapshot", "SnapshotStore", "open_store", "KEY_PREFIX", "key_of"]

log = logging.getLogger("service.snapshots")
KEY_PREFIX = "lstm:session:"
STORE_MAGIC = b"LSTS"
LOAD_TIMEOUT = 0.2  # seconds a load may wait for Redis before the caller goes on without it
WRITE_TIMEOUT = 1.0  # socket timeout for the background writer (off the step path)
CONNECT_TIMEOUT = 0.5
PROBE_INTERVAL = 0.5  # seconds between pings while Redis is down
WRITE_BATCH = 64  # writes per pipelined round trip
MAX_PENDING = 4096  # distinct keys waiting to be written
FOREVER_MS = 10 * 365 * 86400 * 1000  # a lease's PX when its session never expires
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

Fence = Tuple[int, int]  # (lease epoch, write sequence): a write only while the lease is ours (persist/leases.py)
Write = Tuple[Optional[Snapshot], Optional[float], Optional[Fence]]  # (snapshot, or None to delete; expiry; fence)


def key_of(name: SessionName) -> str:
    """The Redis key of a session's snapshot."""
    return f"{KEY_PREFIX}{name.owner}/{name.id}"


def name_of(key: str) -> SessionName:
    """The session a (namespaced) snapshot key names."""
    owner, _, session_id = key[len(KEY_PREFIX):].rpartition("/")
    return SessionName(owner, session_id)


def expiry_of(snapshot: Snapshot) -> Optional[float]:
    """The monotonic time the snapshot's key expires (its session's idle TTL), None for never."""
    ttl = snapshot.ttl
    return time.monotonic() + ttl if math.isfinite(ttl) and ttl > 0 else None


def legacy_key_of(name: SessionName) -> str:
    """Where a server from before per-principal ids kept the snapshot (read, then moved)."""
    return KEY_PREFIX + name.id


class SnapshotStore:
    """The Redis-backed store; build it with ``open_store``."""

    def __init__(self, redis: Redis, where: str, metrics=None, max_pending: int = MAX_PENDING) -> None:
        self.redis = redis
        self.where = where  # the URL without a password, for logs and health detail
        self.max_pending = max_pending
        self.healthy = True
        self.detail = ""  # why Redis is unhealthy, for the health check; "" while healthy
        self.counts: Counter = Counter()  # written, deleted, dropped, superseded, failed, hit, miss, ...
        self._pending: "OrderedDict[str, Write]" = OrderedDict()
        self._inflight: Dict[str, Write] = {}
        self._wake = asyncio.Event()
        self._up = asyncio.Event()
        self._up.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._metrics = StoreMetrics(metrics, self)
        self.leases = None  # a persist.leases.Leases once leases are on: writes are fenced
        self.on_fenced: Callable[[SessionName, int], None] = lambda name, epoch: None
        self._prober: Optional[asyncio.Task] = None
        self._migration: Optional[asyncio.Task] = None
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="snapshot-writer")

    def migrate(self) -> "asyncio.Task":
        """Move old-format keys to their namespaced form, in the background (once per open)."""
        from .snapshot_migration import migrate_legacy_keys

        async def run() -> None:
            try:
                self.counts["migrated"] += await migrate_legacy_keys(self.redis, KEY_PREFIX, STORE_MAGIC, key_of)
            except REDIS_ERRORS as exc:  # Redis went away: loads still read old keys, nothing lost
                event(log, "snapshot_migration_stopped", logging.WARNING, error=_reason(exc))

        self._migration = asyncio.get_running_loop().create_task(run(), name="snapshot-migration")
        return self._migration

    # ---- the step path: never blocks ----

    def save(self, snapshot: Snapshot, fence: Optional[Fence] = None) -> None:
        self._queue(key_of(SessionName(snapshot.owner, snapshot.session_id)), (snapshot, expiry_of(snapshot), fence))

    def delete(self, name: SessionName, fence: Optional[Fence] = None) -> None:
        self._queue(key_of(name), (None, None, fence))

    def pending_for(self, name: SessionName) -> bool:
        """A write of ``name`` is queued or on its way."""
        key = key_of(name)
        return key in self._pending or key in self._inflight

    def forget(self, name: SessionName) -> None:
        """Drop a pending write of ``name`` (a newer one was written directly: write-through, handoff)."""
        self._pending.pop(key_of(name), None)

    def _queue(self, key: str, write: Write) -> None:
        if self._pending.pop(key, None) is not None:
            self._count("superseded")
        self._pending[key] = write
        self._bound()
        self._drained.clear()
        self._wake.set()

    def _bound(self) -> None:
        """Drop the oldest pending save while over the bound; a delete goes only when nothing
        else can (losing one could bring back a deleted session until its TTL)."""
        while len(self._pending) > self.max_pending:
            victim = next((sid for sid, (snap, _, _) in self._pending.items() if snap is not None), None)
            if victim is None:
                victim = next(iter(self._pending))
            del self._pending[victim]
            self._count("dropped")

    # ---- reads ----

    async def load(self, name: SessionName) -> Optional[Snapshot]:
        """The session's latest snapshot (a pending write counts), or None if there is none or
        Redis does not answer within LOAD_TIMEOUT. Reads only ``name``'s own keys: what other
        namespaces hold never changes the path (one MGET)."""
        key = key_of(name)
        for writes in (self._pending, self._inflight):
            if key in writes:
                self._count("hit_pending")
                return writes[key][0]
        if not self.healthy:
            self._count("unavailable")
            return None
        try:
            data, legacy = await asyncio.wait_for(self.redis.mget(key, legacy_key_of(name)), LOAD_TIMEOUT)
        except REDIS_ERRORS as exc:
            self._mark_down(exc)
            self._count("unavailable")
            return None
        if data is None and legacy is not None:
            return self._migrated(name, legacy)
        return self._decode(name, key, data)

    def _migrated(self, name: SessionName, data: Union[bytes, str]) -> Optional[Snapshot]:
        """A snapshot under the pre-namespace key: this namespace's only if it records this owner."""
        snapshot = self._decode(name, legacy_key_of(name), data, quiet_owner=True)
        if snapshot is not None:
            self.save(snapshot)  # under key_of(name), before the delete: a crash between keeps a copy
            self._queue(legacy_key_of(name), (None, None, None))
            self._count("migrated")
        return snapshot

    def _decode(self, name: SessionName, key: str, data: Optional[Union[bytes, str]],
                quiet_owner: bool = False) -> Optional[Snapshot]:
        if data is None:
            self._count("miss")
            return None
        try:
            if not isinstance(data, bytes):  # the client is made without decode_responses
                raise SnapshotFormatError("Redis returned text, not bytes")
            snapshot = decode_snapshot(data, STORE_MAGIC)
        except SnapshotFormatError as exc:
            event(log, "snapshot_unreadable", logging.WARNING, key=key, error=str(exc))
            self._count("corrupt")
            return None
        if snapshot.owner != name.owner and quiet_owner:  # an old key of another principal's: not ours
            self._count("miss")
            return None
        if (snapshot.owner, snapshot.session_id) != name:
            event(log, "snapshot_unreadable", logging.WARNING, key=key, error="it names another session")
            self._count("corrupt")
            return None
        self._count("hit")
        return snapshot

    # ---- the background writer ----

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._up.wait()
                batch = [self._pending.popitem(last=False) for _ in range(min(WRITE_BATCH, len(self._pending)))]
                self._inflight = dict(batch)
                try:
                    await self._write(batch)
                except REDIS_ERRORS as exc:
                    self._requeue(batch)
                    self._mark_down(exc)
                except Exception:  # a bug must cost this batch, never the writer task
                    log.exception("snapshot writer: a batch of %d writes dropped", len(batch))
                    for _ in batch:
                        self._count("failed")
                finally:
                    self._inflight = {}
            if not self._pending:
                self._drained.set()

    async def _write(self, batch) -> None:
        now = time.monotonic()
        pipe = self.redis.pipeline(transaction=False)
        kinds: list = []
        fenced: list = []  # (index in the pipeline, session, epoch) of each fenced write
        for key, (snapshot, expiry, fence) in batch:
            name = name_of(key)
            if self.leases is not None and fence is not None:
                fenced.append((len(kinds), name, fence[0]))
            if snapshot is None or (expiry is not None and expiry <= now):
                if self.leases is not None and fence is not None:
                    await self.leases.script("delete")(keys=[lease_key(name), key], args=[
                        self.leases.replica_id, fence[0]], client=pipe)
                else:
                    pipe.delete(key)
                kinds.append("deleted")
                continue
            try:
                value = encode_snapshot(snapshot, STORE_MAGIC)
            except (ValueError, TypeError) as exc:  # a malformed snapshot must not stop the writer
                event(log, "snapshot_unencodable", logging.ERROR, key=key, error=str(exc))
                self._count("failed")
                continue
            px = None if expiry is None else max(1, int((expiry - now) * 1000))
            if self.leases is not None and fence is not None:
                await self.leases.script("write")(keys=[lease_key(name), key], args=[
                    self.leases.replica_id, fence[0], fence[1], value, px or FOREVER_MS], client=pipe)
            else:
                pipe.set(key, value, px=px)
            kinds.append("written")
        # Per-command errors (e.g. Redis out of memory) come back in the results: Redis answers,
        # so they are failed writes, not an outage; connection errors still raise.
        results = await pipe.execute(raise_on_error=False)
        refused = [r for r in results if isinstance(r, ResponseError)]
        for at, name, epoch in fenced:  # 0: the lease is not ours at this epoch (2: stale, a newer write landed)
            if results[at] == 0:
                kinds[at] = "fenced"
                self.on_fenced(name, epoch)
        for kind, result in zip(kinds, results):
            self._count("failed" if isinstance(result, ResponseError) else kind)
        if refused:
            event(log, "snapshot_write_refused", logging.WARNING, count=len(refused), error=str(refused[0]))

    def _requeue(self, batch) -> None:
        """Put a failed batch back in front, unless a newer write for the id came meanwhile."""
        for key, write in reversed(batch):
            if key not in self._pending:
                self._pending[key] = write
                self._pending.move_to_end(key, last=False)
        self._bound()

    # ---- health ----

    def _mark_down(self, exc: BaseException) -> None:
        if self.healthy:
            self.healthy = False
            self._up.clear()
            self.detail = f"state store {self.where} unreachable: {_reason(exc)}"
            self._count("outage")
            event(log, "state_store_down", logging.WARNING, store=self.where, error=_reason(exc),
                  pending=len(self._pending) + len(self._inflight))
            self._metrics.up(False)
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe(), name="snapshot-prober")

    async def _probe(self) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                await asyncio.wait_for(self.redis.ping(), CONNECT_TIMEOUT)
            except REDIS_ERRORS:
                continue
            self.healthy = True
            self.detail = ""
            self._up.set()
            self._metrics.up(True)
            event(log, "state_store_up", store=self.where, down_seconds=round(time.monotonic() - started, 1),
                  pending=len(self._pending))
            return

    def _count(self, kind: str) -> None:
        self.counts[kind] += 1
        self._metrics.count(kind)

    # ---- lifecycle ----

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every pending write to reach Redis; False if some did not."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for task in (self._writer, self._prober, self._migration):
            if task is not None:
                task.cancel()
        for task in (self._writer, self._prober, self._migration):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        await self.redis.aclose()

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._inflight)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return "no answer in time" if isinstance(exc, asyncio.TimeoutError) and not str(exc) else text


def _where(url: str) -> str:
    """``url`` as it may be logged: the password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL this store can use; ConfigError saying what is allowed otherwise."""
    rule = "use redis://host:port/db (e.g. redis://127.0.0.1:6379/0) or rediss:// for TLS"
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"--state-store {_where(url)!r} is not supported: {rule}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    db = parts.path.lstrip("/")
    if not parts.hostname or port == -1 or (db and not db.isdigit()):
        raise ConfigError(f"--state-store {_where(url)!r} is not a valid Redis URL: {rule}")
    return url


async def open_store(url: str, metrics=None) -> SnapshotStore:
    """A store writing to the Redis at ``url``. An unreachable Redis does not stop the start:
    the store begins unhealthy and reconnects in the background."""
    where = _where(check_url(url))
    redis = Redis.from_url(url, socket_timeout=WRITE_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
                           retry=Retry(NoBackoff(), 0))  # our prober retries; redis-py's own retry would stall loads
    store = SnapshotStore(redis, where, metrics)
    try:
        await asyncio.wait_for(redis.ping(), CONNECT_TIMEOUT)
    except REDIS_ERRORS as exc:
        store._mark_down(exc)
    else:
        store._metrics.up(True)
        event(log, "state_store_open", store=where)
        store.migrate()
    return store
