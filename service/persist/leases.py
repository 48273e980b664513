"""One owner per session across replicas: replica heartbeats and session leases with a
fencing epoch, in the state store's Redis (``--state-store``).

Keys (beside the snapshot key ``lstm:session:<principal>/<id>``):

- ``lstm:replica:<replica id>``: the replica's heartbeat, a string with a PX TTL of
  ``--lease-ms``, renewed every TTL/3. It exists while the replica is alive.
- ``lstm:lease:<principal>/<id>``: the session's lease, a hash {owner, epoch, seq}; it
  expires with the snapshot (the session's idle TTL).

Every change of a lease is one Lua script, so Redis applies it atomically:

- ACQUIRE: no lease, or its owner's heartbeat is gone (or it is this replica): take it
  with epoch+1 and return the snapshot in the same script; otherwise say who holds it.
- CLAIM (a new session): the same, without a snapshot to read (a stale one is removed).
- WRITE: a snapshot write only while the lease is (this replica, this epoch), and only if
  its sequence number is above the last one written (so a queued older write that lands
  after a newer, awaited one is skipped, never applied). A fenced write answers 0 and the
  replica drops its copy (service/persist/durability.py).
- VERIFY: renew the heartbeat and check the lease is still ours.
- TRANSFER (handoff) and RELEASE (drain): write the latest state and hand the lease to the
  asker with epoch+1, or delete it, both only while it is ours.

The fencing is local time against Redis TTLs: a replica holds a *proof* that its
heartbeat key exists until (send time of its last renewal + TTL - margin), measured on its
own monotonic clock. Within the proof a lease recorded as ours cannot have moved (a taker
needs the heartbeat gone); past it, or after a renewal found the key gone (a pause, e.g.
SIGSTOP, or a partition), every lease is re-verified in Redis before the next commit.
This assumes clock *rates* agree within the margin (docs/durability.md).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

from redis.asyncio import Redis

from ..core.session_ids import SessionName
from ..proc.logs import event

log = logging.getLogger("service.leases")

LEASE_PREFIX = "lstm:lease:"
REPLICA_PREFIX = "lstm:replica:"
INBOX_PREFIX = "lstm:inbox:"  # the replica's pub/sub channel for handoff (service/persist/handoff.py)
DEFAULT_LEASE_MS = 400  # a dead owner is taken over within this (+ one poll), under 500 ms
MARGIN = 0.1  # the proof ends this fraction of the TTL early: clock-rate skew, scheduling


def lease_key(name: SessionName) -> str:
    return f"{LEASE_PREFIX}{name.owner}/{name.id}"


def new_replica_id() -> str:
    return secrets.token_hex(8)


# KEYS[1] heartbeat; ARGV[1] token, ARGV[2] px. 1: renewed (it still existed), 0: made again.
HEARTBEAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 0
"""

# KEYS[1] lease, KEYS[2] snapshot, KEYS[3] its pre-namespace key; ARGV[1] me, ARGV[2] heartbeat prefix.
# 'none' carries the old key's value, if any (service/persist/snapshots.py moves it).
ACQUIRE = """
local owner, epoch = unpack(redis.call('HMGET', KEYS[1], 'owner', 'epoch'))
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 1 then
  return {'held', owner, epoch}
end
local snap = redis.call('GET', KEYS[2])
if not snap then
  if owner and owner ~= '' then redis.call('DEL', KEYS[1]) end
  return {'none', redis.call('GET', KEYS[3])}
end
local e = (tonumber(epoch) or 0) + 1
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', e, 'seq', 0)
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return {'took', tostring(e), snap}
"""

# KEYS[1] lease, KEYS[2] snapshot; ARGV[1] me, ARGV[2] heartbeat prefix, ARGV[3] px.
CLAIM = """
local owner, epoch = unpack(redis.call('HMGET', KEYS[1], 'owner', 'epoch'))
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 1 then
  return {'held', owner, epoch}
end
local e = (tonumber(epoch) or 0) + 1
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', e, 'seq', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
return {'took', tostring(e)}
"""

# KEYS[1] lease, KEYS[2] snapshot; ARGV[1] me, ARGV[2] epoch, ARGV[3] seq, ARGV[4] value, ARGV[5] px.
# 1 written, 0 fenced (the lease is not ours at this epoch), 2 stale (a newer write landed first).
# No lease at all (Redis lost its data, or it expired with an idle session): made again as ours;
# a deleted session's lease stays as a tombstone (owner '') until its TTL, so it is not.
WRITE = """
local owner, epoch, seq = unpack(redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'seq'))
if not owner then
  owner, epoch = ARGV[1], ARGV[2]
  redis.call('HSET', KEYS[1], 'owner', owner, 'epoch', epoch, 'seq', 0)
end
if owner ~= ARGV[1] or epoch ~= ARGV[2] then return 0 end
if tonumber(ARGV[3]) <= (tonumber(seq) or 0) then return 2 end
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
redis.call('HSET', KEYS[1], 'seq', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS[1] lease, KEYS[2] snapshot; ARGV[1] me, ARGV[2] epoch. 1 deleted, 0 fenced. The lease
# stays as a tombstone (owner '') until it expires, so a stale write cannot bring the session back.
DELETE = """
local owner, epoch = unpack(redis.call('HMGET', KEYS[1], 'owner', 'epoch'))
if owner and (owner ~= ARGV[1] or epoch ~= ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', '', 'epoch', ARGV[2])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], 600000) end
return 1
"""

# KEYS[1] lease, KEYS[2] heartbeat; ARGV[1] me, ARGV[2] epoch, ARGV[3] token, ARGV[4] px.
# {lease still ours (1/0), heartbeat was continuous (1/0)}
VERIFY = """
local continuous = 0
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[2], ARGV[4]) continuous = 1
else
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
end
local owner, epoch = unpack(redis.call('HMGET', KEYS[1], 'owner', 'epoch'))
if not owner then  -- Redis lost it (restarted empty): ours again, as WRITE does
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', ARGV[2], 'seq', 0)
  return {1, continuous}
end
if owner == ARGV[1] and epoch == ARGV[2] then return {1, continuous} end
return {0, continuous}
"""

# KEYS[1] lease, KEYS[2] snapshot; ARGV[1] me, ARGV[2] epoch, ARGV[3] to ('' : release),
# ARGV[4] value ('' : keep the snapshot as it is), ARGV[5] px.
# The new epoch (the asker's), -1 released, 0 fenced.
TRANSFER = """
local owner, epoch = unpack(redis.call('HMGET', KEYS[1], 'owner', 'epoch'))
if owner ~= ARGV[1] or epoch ~= ARGV[2] then return 0 end
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
if ARGV[3] == '' then redis.call('DEL', KEYS[1]) return -1 end
local e = tonumber(epoch) + 1
redis.call('HSET', KEYS[1], 'owner', ARGV[3], 'epoch', e, 'seq', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return e
"""


@dataclass
class Taken:
    """ACQUIRE's answer: ``kind`` took (epoch, snapshot bytes), held (owner, epoch) or none."""

    kind: str
    epoch: int = 0
    owner: str = ""
    snapshot: Optional[bytes] = None  # took: the snapshot; none: the pre-namespace key's value, if any


def _text(value: Union[bytes, str, int, None]) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Leases:
    """This replica's identity, heartbeat and lease scripts (one per owner of sessions)."""

    def __init__(self, redis: Redis, replica_id: str = "", lease_ms: int = DEFAULT_LEASE_MS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.replica_id = replica_id or new_replica_id()
        self.token = f"{self.replica_id}:{secrets.token_hex(4)}"  # this process: a restart is a new heartbeat
        self.lease_ms = lease_ms
        self.clock = clock
        self.heartbeat_key = REPLICA_PREFIX + self.replica_id
        self.inbox = INBOX_PREFIX + self.replica_id
        self.valid_until = 0.0  # local monotonic time before which our heartbeat surely exists
        self.incarnation = 0  # bumped whenever the heartbeat may have lapsed: every lease is re-verified
        self.counts = {"renewed": 0, "lapsed": 0}
        self._scripts = {name: redis.register_script(text) for name, text in (
            ("heartbeat", HEARTBEAT), ("acquire", ACQUIRE), ("claim", CLAIM), ("write", WRITE),
            ("delete", DELETE), ("verify", VERIFY), ("transfer", TRANSFER))}
        self._task: Optional[asyncio.Task] = None

    @property
    def ttl(self) -> float:
        return self.lease_ms / 1000.0

    def script(self, name: str):
        return self._scripts[name]

    # ---- the heartbeat ----

    async def start(self) -> None:
        """Load the scripts (a first call then costs one round trip, not a NOSCRIPT miss and a
        load) and start the heartbeat."""
        try:
            for script in self._scripts.values():
                await asyncio.wait_for(self.redis.script_load(script.script), 1.0)
        except Exception as exc:  # Redis down: each script loads on its first call instead
            log.debug("lease scripts not loaded: %s", exc)
        self._task = asyncio.get_running_loop().create_task(self._beat_forever(), name="lease-heartbeat")

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as exc:  # Redis down: the proof lapses by itself; keep trying
                log.debug("heartbeat failed: %s", exc)
            await asyncio.sleep(self.ttl / 3)

    async def beat(self) -> None:
        sent = self.clock()
        continuous = await self._scripts["heartbeat"](keys=[self.heartbeat_key], args=[self.token, self.lease_ms])
        self._proved(sent, bool(continuous))

    def _proved(self, sent: float, continuous: bool) -> None:
        """A renewal sent at ``sent`` answered; ``continuous``: the key was still there."""
        if not continuous or sent > self.valid_until:
            self.incarnation += 1
            self.counts["lapsed"] += 1
            if not continuous and sent <= self.valid_until:  # renewed in time, yet the key was not ours
                event(log, "heartbeat_not_ours", logging.WARNING, replica=self.replica_id,
                      hint="Redis lost it (restarted empty?), or another process runs with the same "
                           "--replica-id: give each replica its own")
            elif self.valid_until:  # not the first beat
                event(log, "heartbeat_lapsed", logging.WARNING, replica=self.replica_id,
                      late_ms=round((sent - self.valid_until) * 1000))
        self.counts["renewed"] += 1
        self.valid_until = sent + self.ttl * (1 - MARGIN)

    def proven(self, incarnation: Optional[int], slack: float = 0.0) -> bool:
        """A lease verified at ``incarnation`` is surely still ours now, and ``slack`` s from now
        (no Redis call)."""
        return incarnation == self.incarnation and self.clock() + slack < self.valid_until

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:  # gone at once, not after the TTL: others take our released leases without waiting
            await asyncio.wait_for(self.redis.delete(self.heartbeat_key), 0.5)
        except Exception:  # Redis down: it expires by itself
            pass

    # ---- leases ----

    async def acquire(self, name: SessionName, snapshot_key: str, legacy_key: str) -> Taken:
        reply: List = await self._scripts["acquire"](keys=[lease_key(name), snapshot_key, legacy_key],
                                                     args=[self.replica_id, REPLICA_PREFIX])
        kind = _text(reply[0])
        if kind == "took":
            return Taken("took", int(_text(reply[1])), snapshot=reply[2])
        if kind == "held":
            return Taken("held", int(_text(reply[2] or 0)), owner=_text(reply[1]))
        return Taken("none", snapshot=reply[1] if len(reply) > 1 else None)

    async def claim(self, name: SessionName, snapshot_key: str, ttl_ms: int) -> Taken:
        reply: List = await self._scripts["claim"](keys=[lease_key(name), snapshot_key],
                                                   args=[self.replica_id, REPLICA_PREFIX, ttl_ms])
        if _text(reply[0]) == "held":
            return Taken("held", int(_text(reply[2] or 0)), owner=_text(reply[1]))
        return Taken("took", int(_text(reply[1])))

    async def verify(self, name: SessionName, epoch: int) -> Tuple[bool, int]:
        """Is the lease still (us, epoch)? Renews the heartbeat on the way; (ours, the incarnation
        the answer is good for)."""
        sent = self.clock()
        ours, continuous = await self._scripts["verify"](
            keys=[lease_key(name), self.heartbeat_key], args=[self.replica_id, epoch, self.token, self.lease_ms])
        self._proved(sent, bool(continuous))
        return bool(ours), self.incarnation

    async def transfer(self, name: SessionName, snapshot_key: str, epoch: int, to: str, value: bytes,
                       ttl_ms: int) -> int:
        """Write ``value`` (b'': leave the snapshot) and give the lease to ``to`` ('': release it);
        the new epoch, -1 released, 0 fenced."""
        return int(await self._scripts["transfer"](keys=[lease_key(name), snapshot_key],
                                                   args=[self.replica_id, epoch, to, value, ttl_ms]))
