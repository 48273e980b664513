"""One server per port (service/port_claim.py) without a server: the claim is exclusive, names
its holder's pid, goes with its holder, and a port another program listens on is refused."""
from __future__ import annotations

import os
import socket

import pytest

from lstm_service.service.proc import port_claim
from lstm_service.service.api.errors import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_claim_is_exclusive_names_its_holder_and_goes_with_it():
    port = free_port()
    held = port_claim.claim("127.0.0.1", port)
    try:
        assert port_claim.holder_pid("127.0.0.1", port) == os.getpid()
        assert "127.0.0.1" in port_claim.claimed_hosts(port)
        with pytest.raises(ConfigError, match=f"port {port} is already served by another lstm-serve "
                                              f"\\(pid {os.getpid()}\\)"):
            port_claim.claim("127.0.0.1", port)
        port_claim.claim("127.0.0.2", port).close()  # another address is another server's to claim
        held.answer()  # the probes above are let go, none left waiting
    finally:
        held.close()
    assert port_claim.holder_pid("127.0.0.1", port) is None
    port_claim.claim("127.0.0.1", port).close()  # free again


def test_a_port_another_program_listens_on_is_refused_with_the_way_out():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            port_claim.check_free("127.0.0.1", port, wait=0)
    assert f"port {port} on 127.0.0.1 is in use by another program" in str(info.value)
    assert "--port or LSTM_PORT (0 picks a free one)" in str(info.value)


def test_a_very_long_host_name_still_fits_the_abstract_namespace():
    port = free_port()
    host = "replica." + "x" * 200 + ".example"
    held = port_claim.claim(host, port)
    try:
        assert port_claim.holder_pid(host, port) == os.getpid()
    finally:
        held.close()
