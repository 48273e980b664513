"""ExportSession / ImportSession blobs: a session's state as signed bytes a
client may keep and hand to any server that serves the same model.

Layout: the snapshot encoding of service/persist/snapshot_format.py with magic
b"LSTB" and the owner left empty (the importer becomes the owner), then 32
bytes of HMAC-SHA256 over everything before them, keyed with the server key
(--session-key-file). Servers that share the key accept each other's blobs;
a blob with any byte changed, cut short, of another format version or from
another model is refused before anything is created.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from pathlib import Path

from ..api.errors import ConfigError, FailedPrecondition, InvalidArgument
from .snapshot_format import (
    FORMAT_VERSION,
    PREFIX,
    Snapshot,
    SnapshotFormatError,
    decode_snapshot,
    encode_snapshot,
)

BLOB_MAGIC = b"LSTB"
MAC_BYTES = hashlib.sha256().digest_size
MIN_KEY_BYTES = 32
FIELD = "blob"


def encode_blob(snapshot: Snapshot, key: bytes) -> bytes:
    """The signed, owner-free blob of ``snapshot``."""
    _check_key(key)
    body = encode_snapshot(replace(snapshot, owner=""), BLOB_MAGIC)
    return body + hmac.new(key, body, hashlib.sha256).digest()


def decode_blob(data: bytes, key: bytes, model_sha256: str) -> Snapshot:
    """The snapshot in ``data`` (owner ""), after checking its signature and model.

    InvalidArgument: not a blob, another format version, truncated, altered or signed with
    another key. FailedPrecondition: a genuine blob of a model other than ``model_sha256``."""
    _check_key(key)
    data = bytes(data)
    _check_prefix(data)
    body, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise InvalidArgument(
            "the session blob's signature does not match: it was altered or cut short, or exported by a "
            "server with another session key; import only blobs that ExportSession returned, unchanged",
            field=FIELD, reason="BLOB_SIGNATURE_MISMATCH")
    try:
        snapshot = decode_snapshot(body, BLOB_MAGIC)
    except SnapshotFormatError as exc:  # signed by us yet unreadable: still the client's bytes to fix
        raise InvalidArgument(f"the session blob cannot be read: {exc}", field=FIELD, reason="BLOB_INVALID") from None
    if snapshot.model_sha256 != model_sha256:
        raise FailedPrecondition(
            f"the session blob was exported from model sha256 {snapshot.model_sha256[:12]}..., but this server "
            f"serves {model_sha256[:12]}...; import it into a server serving the same model file",
            reason="OTHER_MODEL", field=FIELD)
    return snapshot


def _check_prefix(data: bytes) -> None:
    """Clear messages for what is plainly not a blob of this version (read before the signature,
    but nothing read here is trusted: the signature check still follows)."""
    if len(data) < PREFIX.size + MAC_BYTES:
        raise InvalidArgument(f"the session blob is {len(data)} bytes, too short to be one (cut short?)",
                              field=FIELD, reason="BLOB_INVALID")
    magic, version, _ = PREFIX.unpack_from(data)
    if magic != BLOB_MAGIC:
        raise InvalidArgument("the bytes are not a session blob: pass the blob field of an ExportSession reply",
                              field=FIELD, reason="BLOB_INVALID")
    if version != FORMAT_VERSION:
        raise InvalidArgument(f"the session blob has format version {version}; this server reads version "
                              f"{FORMAT_VERSION}", field=FIELD, reason="BLOB_VERSION")


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the session key must be at least {MIN_KEY_BYTES} bytes")


def read_session_key(path: str) -> bytes:
    """The HMAC key in ``path`` (--session-key-file): its bytes, surrounding whitespace removed,
    at least MIN_KEY_BYTES of them (e.g. ``head -c 32 /dev/urandom | base64 > session.key``)."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"--session-key-file {path!r} cannot be read: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"--session-key-file {path!r} holds {len(key)} bytes; a session key needs at least "
                          f"{MIN_KEY_BYTES} (make one with: head -c 32 /dev/urandom | base64 > {path})")
    return key
