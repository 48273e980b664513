"""A session snapshot and its one binary encoding, shared by the Redis store
(service/persist/snapshots.py) and the export blob (service/persist/blob.py).

Layout (all integers little-endian):

    magic      4 bytes   b"LSTS" in Redis, b"LSTB" in an export blob
    version    u16       FORMAT_VERSION
    header_len u32       length of the JSON header that follows
    header     UTF-8 JSON: id, owner, steps, ttl, model (sha256), dtype,
               shapes (one [L, H] per state part), logprobs (V or null)
    arrays     raw float32 bytes: each state part, then last_logprobs

The header is JSON so a person can read it and a later version can add a
field; the arrays are raw bytes so a round trip is bitwise (NaN payloads
included). Nothing is ever unpickled: decoding a hostile value can only
raise SnapshotFormatError.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

FORMAT_VERSION = 1
DTYPE = "<f4"  # float32, little-endian, whatever the host's byte order
PREFIX = struct.Struct("<4sHI")  # magic, version, header_len
MAX_HEADER = 64 * 1024  # a real header is ~200 bytes; anything larger is garbage
MAX_DIM = 1 << 24  # no model here has a state or vocabulary this large


@dataclass(frozen=True)
class Snapshot:
    session_id: str
    owner: str  # principal that owns the session ("anonymous" without auth; "" in an export blob)
    steps: int
    state: Tuple[np.ndarray, ...]  # [L, H] float32 per state part, in the card's state_names order
    last_logprobs: Optional[np.ndarray]  # [V] float32 or None
    ttl: float  # the session's idle TTL, seconds (the Redis key expires with it)
    model_sha256: str  # sha256 of the served ONNX file


class SnapshotFormatError(ValueError):
    """The bytes are not a snapshot this version can read; the message says why."""


def encode_snapshot(snapshot: Snapshot, magic: bytes) -> bytes:
    """The snapshot as bytes: prefix, JSON header, raw float32 arrays."""
    arrays = [np.ascontiguousarray(part, dtype=DTYPE) for part in snapshot.state]
    logprobs = None
    if snapshot.last_logprobs is not None:
        logprobs = np.ascontiguousarray(snapshot.last_logprobs, dtype=DTYPE).reshape(-1)
    header = {
        "id": snapshot.session_id,
        "owner": snapshot.owner,
        "steps": int(snapshot.steps),
        "ttl": float(snapshot.ttl),
        "model": snapshot.model_sha256,
        "dtype": DTYPE,
        "shapes": [list(a.shape) for a in arrays],
        "logprobs": None if logprobs is None else int(logprobs.shape[0]),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    body = [a.tobytes() for a in arrays]
    if logprobs is not None:
        body.append(logprobs.tobytes())
    return b"".join([PREFIX.pack(magic, FORMAT_VERSION, len(head)), head, *body])


def decode_snapshot(data: bytes, magic: bytes) -> Snapshot:
    """The inverse of ``encode_snapshot``; SnapshotFormatError on anything else."""
    if len(data) < PREFIX.size:
        raise SnapshotFormatError(f"it is {len(data)} bytes, shorter than the {PREFIX.size}-byte prefix")
    found_magic, version, head_len = PREFIX.unpack_from(data)
    if found_magic != magic:
        raise SnapshotFormatError(f"it does not start with {magic!r} (found {found_magic!r})")
    if version != FORMAT_VERSION:
        raise SnapshotFormatError(f"it has format version {version}; this server reads version {FORMAT_VERSION}")
    if head_len > MAX_HEADER or PREFIX.size + head_len > len(data):
        raise SnapshotFormatError(f"its header length {head_len} does not fit in {len(data)} bytes")
    header = _parse_header(data[PREFIX.size:PREFIX.size + head_len])
    shapes, vocab = header["shapes"], header["logprobs"]
    sizes = [rows * cols for rows, cols in shapes] + ([vocab] if vocab is not None else [])
    arrays = _split_arrays(data, PREFIX.size + head_len, sizes)
    state = tuple(a.reshape(shape) for a, shape in zip(arrays, shapes))
    return Snapshot(
        session_id=header["id"], owner=header["owner"], steps=header["steps"], state=state,
        last_logprobs=arrays[-1] if vocab is not None else None,
        ttl=header["ttl"], model_sha256=header["model"],
    )


def _parse_header(raw: bytes) -> dict:
    """The JSON header, every field checked for type and range."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SnapshotFormatError("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise SnapshotFormatError("its header is not a JSON object")
    expected: Dict[str, Any] = {"id": str, "owner": str, "steps": int, "ttl": (int, float), "model": str,
                                "shapes": list}
    for name, kind in expected.items():
        if not isinstance(header.get(name), kind) or isinstance(header.get(name), bool):
            raise SnapshotFormatError(f"its header field {name!r} is missing or of the wrong type")
    if header.get("dtype") != DTYPE:
        raise SnapshotFormatError(f"its arrays have dtype {header.get('dtype')!r}; only {DTYPE!r} (float32) is read")
    if header["steps"] < 0 or not header["ttl"] >= 0:
        raise SnapshotFormatError("its steps or ttl is negative")
    if not header["shapes"] or not all(_is_shape(s) for s in header["shapes"]):
        raise SnapshotFormatError("its state shapes are not a list of [layers, hidden] pairs")
    vocab = header.get("logprobs")
    if vocab is not None and not _is_dim(vocab):
        raise SnapshotFormatError("its logprobs length is not a positive integer")
    header["ttl"] = float(header["ttl"])
    return header


def _is_dim(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_DIM


def _is_shape(shape: object) -> bool:
    return isinstance(shape, list) and len(shape) == 2 and all(_is_dim(d) for d in shape)


def _split_arrays(data: bytes, offset: int, sizes: List[int]) -> List[np.ndarray]:
    """Writable float32 copies of the arrays after ``offset`` (exactly their bytes, none left over)."""
    itemsize = np.dtype(DTYPE).itemsize
    needed = offset + itemsize * sum(sizes)
    if needed != len(data):
        raise SnapshotFormatError(f"it has {len(data)} bytes where its header describes {needed}")
    arrays = []
    for size in sizes:
        arrays.append(np.frombuffer(data, DTYPE, size, offset).astype(np.float32))  # a copy, native order
        offset += itemsize * size
    return arrays
