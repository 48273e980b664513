"""Export/import blobs: a bitwise round trip; every altered, cut-short,
re-versioned or foreign-key blob refused as INVALID_ARGUMENT; a genuine blob
of another model refused as FAILED_PRECONDITION."""
from __future__ import annotations

import hashlib
import hmac
import json
import struct

import pytest

from lstm_service.service.persist.blob import BLOB_MAGIC, MAC_BYTES, decode_blob, encode_blob, read_session_key
from lstm_service.service.api.errors import ConfigError, FailedPrecondition, InvalidArgument
from lstm_service.service.persist.snapshot_format import PREFIX, encode_snapshot
from test_snapshots import assert_bitwise, make_snapshot

KEY = b"k" * 32
MODEL = "ab" * 32  # make_snapshot's model


def resign(body: bytes, key: bytes = KEY) -> bytes:
    return body + hmac.new(key, body, hashlib.sha256).digest()


def test_round_trip_is_bitwise_and_owner_free():
    for snapshot in (make_snapshot(seed=3), make_snapshot(seed=4, logprobs=False, parts=1)):
        got = decode_blob(encode_blob(snapshot, KEY), KEY, MODEL)
        assert got.owner == ""  # the importer becomes the owner
        assert_bitwise(got, snapshot.__class__(**{**snapshot.__dict__, "owner": ""}))
        assert b"alice" not in encode_blob(snapshot, KEY)


def test_every_single_changed_byte_is_refused():
    blob = encode_blob(make_snapshot(), KEY)
    for position in range(len(blob)):
        forged = bytearray(blob)
        forged[position] ^= 0x01
        with pytest.raises(InvalidArgument) as err:
            decode_blob(bytes(forged), KEY, MODEL)
        assert err.value.code == "INVALID_ARGUMENT" and err.value.field == "blob"


def test_cut_short_or_extended_blobs_are_refused():
    blob = encode_blob(make_snapshot(), KEY)
    for length in (0, 1, PREFIX.size, PREFIX.size + MAC_BYTES, len(blob) // 2, len(blob) - 1):
        with pytest.raises(InvalidArgument):
            decode_blob(blob[:length], KEY, MODEL)
    with pytest.raises(InvalidArgument, match="signature"):
        decode_blob(blob + b"\0", KEY, MODEL)


def test_a_blob_signed_with_another_key_is_refused():
    blob = encode_blob(make_snapshot(), b"x" * 32)
    with pytest.raises(InvalidArgument, match="another session key"):
        decode_blob(blob, KEY, MODEL)


def test_another_format_version_is_refused_by_name():
    body = encode_blob(make_snapshot(), KEY)[:-MAC_BYTES]
    magic, _, head_len = PREFIX.unpack_from(body)
    future = resign(PREFIX.pack(magic, 2, head_len) + body[PREFIX.size:])  # genuinely signed, newer format
    with pytest.raises(InvalidArgument, match="format version 2") as err:
        decode_blob(future, KEY, MODEL)
    assert err.value.reason == "BLOB_VERSION"


def test_a_store_record_is_not_a_blob():
    record = resign(encode_snapshot(make_snapshot(), b"LSTS"))
    with pytest.raises(InvalidArgument, match="not a session blob"):
        decode_blob(record, KEY, MODEL)


def test_a_signed_but_malformed_body_is_refused_not_crashed():
    body = encode_blob(make_snapshot(), KEY)[:-MAC_BYTES]
    magic, version, head_len = PREFIX.unpack_from(body)
    header = json.loads(body[PREFIX.size:PREFIX.size + head_len])
    for field, value in (("shapes", [[2, 33], [2, 32]]), ("steps", -1), ("dtype", "<f8"), ("logprobs", 0),
                         ("shapes", "x"), ("owner", None)):
        bad = json.dumps({**header, field: value}).encode()
        forged = resign(PREFIX.pack(magic, version, len(bad)) + bad + body[PREFIX.size + head_len:])
        with pytest.raises(InvalidArgument, match="cannot be read"):
            decode_blob(forged, KEY, MODEL)
    huge = resign(struct.pack("<4sHI", BLOB_MAGIC, version, 1 << 30) + b"{}")
    with pytest.raises(InvalidArgument):
        decode_blob(huge, KEY, MODEL)


def test_a_blob_of_another_model_is_a_failed_precondition():
    blob = encode_blob(make_snapshot(), KEY)
    with pytest.raises(FailedPrecondition, match="same model") as err:
        decode_blob(blob, KEY, "cd" * 32)
    assert err.value.code == "FAILED_PRECONDITION" and err.value.reason == "OTHER_MODEL"


def test_session_key_file(tmp_path):
    good = tmp_path / "session.key"
    good.write_bytes(b"0123456789abcdef0123456789abcdef0123\n")
    assert read_session_key(str(good)) == b"0123456789abcdef0123456789abcdef0123"
    short = tmp_path / "short.key"
    short.write_bytes(b"secret\n")
    with pytest.raises(ConfigError, match="at least 32"):
        read_session_key(str(short))
    with pytest.raises(ConfigError, match="cannot be read"):
        read_session_key(str(tmp_path / "missing.key"))
    with pytest.raises(ValueError):
        encode_blob(make_snapshot(), b"short")
