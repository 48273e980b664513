"""One pass, at store open, that moves snapshots written before ids were per principal
(``lstm:session:<id>``) to their namespaced key (``lstm:session:<owner>/<id>``, the owner
read from the snapshot's own header), keeping their TTL.

Until a key is moved a load still finds it (service/persist/snapshots.py reads both keys in one
MGET), but reading it costs its owner check, a few microseconds that an id never used does
not; once moved, every namespace's lookup of an id is alike again. The move is one Lua
script per key: copy only if the new key is absent (a newer snapshot there wins) and
delete the old key only if it still holds what was copied (a write meanwhile is kept).
Running it on several replicas at once is safe. Keys it cannot read are left as they are.
"""
from __future__ import annotations

import logging

from ..proc.logs import event
from ..core.session_ids import SEPARATOR, SessionName
from .snapshot_format import SnapshotFormatError, decode_snapshot

log = logging.getLogger("service.snapshots")
SCAN_COUNT = 256

# KEYS[1] old key, KEYS[2] new key; ARGV[1] the value read. 1: moved, 0: changed or absent meanwhile.
MOVE = """
local value = redis.call('GET', KEYS[1])
if not value or value ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[2], value, 'NX', 'PX', ttl)
else
  redis.call('SET', KEYS[2], value, 'NX')
end
redis.call('DEL', KEYS[1])
return 1
"""


async def migrate_legacy_keys(redis, prefix: str, magic: bytes, key_of) -> int:
    """Move every old-format snapshot under ``prefix`` to ``key_of(SessionName(owner, id))``;
    how many were moved."""
    moved = 0
    async for raw_key in redis.scan_iter(match=prefix + "*", count=SCAN_COUNT):
        key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else str(raw_key)
        session_id = key[len(prefix):]
        if SEPARATOR in session_id:
            continue  # already namespaced
        value = await redis.get(raw_key)
        if value is None:
            continue
        try:
            snapshot = decode_snapshot(value, magic)
        except SnapshotFormatError:
            continue  # not ours to judge here: a load reports it
        if snapshot.session_id != session_id:
            continue
        moved += int(await redis.eval(MOVE, 2, raw_key, key_of(SessionName(snapshot.owner, session_id)), value))
    if moved:
        event(log, "snapshots_migrated", moved=moved)
    return moved
