"""`make certs` (service/certs.py) without a server: a local CA, a server certificate for the
local names and client certificates, which openssl verifies; an existing CA is never overwritten."""
from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from lstm_service.service.proc.certs import CertError, make_certs

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def test_the_ca_signs_a_server_and_a_client_certificate(tmp_path):
    written = make_certs(tmp_path, names=["lstm.example"], clients=["carol"])
    assert {p.name for p in written} == {"ca.pem", "ca.key", "server.pem", "server.key", "carol.pem", "carol.key"}
    for leaf in ("server", "carol"):
        assert openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / f"{leaf}.pem")).strip().endswith(
            "OK")
    server = openssl("x509", "-in", str(tmp_path / "server.pem"), "-noout", "-text")
    assert "DNS:localhost" in server and "IP Address:127.0.0.1" in server and "DNS:lstm.example" in server
    assert "TLS Web Server Authentication" in server
    assert "TLS Web Client Authentication" in openssl("x509", "-in", str(tmp_path / "carol.pem"), "-noout", "-text")
    assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o600


def test_an_existing_ca_or_server_key_is_never_overwritten(tmp_path):
    (tmp_path / "ca.key").write_text("mine")
    with pytest.raises(CertError, match="already holds ca.key: remove them first"):
        make_certs(tmp_path)
    assert (tmp_path / "ca.key").read_text() == "mine"
