"""TLS for a newcomer, with real server processes in both modes: the certificates
`make certs` writes (python -m lstm_service.service.proc.certs) work first try with the
client's default kind of target (127.0.0.1:port) and with localhost; a client without
TLS is told the server speaks TLS; and the server logs one structured line for it
instead of grpc's raw ssl_transport_security.cc line."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from lstm_client import Client, ClientError
from tools.server_process import ServerProcess

MODES = {"default": ["--fronts", "1"], "single": ["--fronts", "0"]}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (Debian package openssl)")
    directory = tmp_path_factory.mktemp("tls") / "certs"
    done = subprocess.run([sys.executable, "-m", "lstm_service.service.proc.certs", str(directory)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in directory.iterdir()} == {"ca.pem", "ca.key", "server.pem", "server.key"}
    return directory


def client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstm_client", "--timeout", "10", *args], capture_output=True,
                          text=True, timeout=60)


def test_the_docs_give_the_recipe_this_test_runs():
    text = DOCS.read_text()
    for line in ("make certs", "lstm-serve --tls-cert certs/server.pem --tls-key certs/server.key",
                 "lstm-client --tls-ca certs/ca.pem"):
        assert line in text, line


@pytest.mark.parametrize("mode", sorted(MODES))
def test_self_made_certificates_work_first_try_and_a_plaintext_client_is_told(tiny_model_dir, certs, mode):
    server = ServerProcess(["--model", str(tiny_model_dir), "--device", "cpu", "--tls-cert", str(certs / "server.pem"),
                            "--tls-key", str(certs / "server.key"), *MODES[mode]],
                           root_certificates=(certs / "ca.pem").read_bytes())
    try:
        for target in (server.target, f"localhost:{server.port}"):  # 127.0.0.1:port: the default's kind
            done = client("--target", target, "--tls-ca", str(certs / "ca.pem"), "models")
            assert done.returncode == 0, done.stderr
        plain = client("--target", server.target, "models")
        assert plain.returncode == 2
        assert "the server speaks TLS: pass --tls-ca" in plain.stderr, plain.stderr
        with Client(server.target, timeout=10) as library:  # the Python client says the same
            with pytest.raises(ClientError) as info:
                library.models()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "the server speaks TLS" in info.value.details()
        deadline = time.monotonic() + 10
        while server.log_tail(500).count("tls_handshake_failed") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    log = server.output
    assert log.count("tls_handshake_failed") == 2, log  # one line per plaintext client (the CLI, the library)
    assert "reason=WRONG_VERSION_NUMBER" in log and "--tls-ca" in log
    assert "ssl_transport_security" not in log, log


def test_the_relay_passes_every_other_line_through_unchanged(caplog):
    import os

    from lstm_service.service.proc.grpc_log import pump

    raw = (b"E1207 18:55:02.702487 8532 chttp2_server.cc:100] a real grpc error\n"
           b"I1207 18:55:02.702487 8532 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
           b"error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid certificate\n"
           b"Traceback (most recent call last): a last line without a newline")
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    os.write(source_w, raw)
    os.close(source_w)
    with caplog.at_level("WARNING", logger="service.tls"):
        pump(source_r, sink_w)
    os.close(sink_w)
    out = os.read(sink_r, 65536)
    os.close(source_r)
    os.close(sink_r)
    assert out == (b"E1207 18:55:02.702487 8532 chttp2_server.cc:100] a real grpc error\n"
                   b"Traceback (most recent call last): a last line without a newline")
    events = [r for r in caplog.records if getattr(r, "event", "") == "tls_handshake_failed"]
    assert len(events) == 1 and events[0].fields["reason"] == "WRONG_VERSION_NUMBER"
