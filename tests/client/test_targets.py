"""A target without a port means the service's port (50051), never gRPC's default of 443."""
import pytest
from lstm_client import Client, normalize_target


@pytest.mark.parametrize("given, meant", [
    ("localhost", "localhost:50051"),
    ("localhost:6000", "localhost:6000"),
    ("10.0.0.5", "10.0.0.5:50051"),
    ("::1", "[::1]:50051"),
    ("[::1]", "[::1]:50051"),
    ("[::1]:7000", "[::1]:7000"),
    ("dns:///lstm.example:443", "dns:///lstm.example:443"),
    ("unix:/tmp/lstm.sock", "unix:/tmp/lstm.sock"),
])
def test_targets(given, meant):
    assert normalize_target(given) == meant


@pytest.mark.parametrize("bad, says", [("localhost:0", "1-65535"), ("localhost:http", "1-65535"),
                                       (":50051", "no host"), ("[::1]x", "[ipv6]:port")])
def test_bad_targets_are_refused_with_the_rule(bad, says):
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        normalize_target(bad)


def test_the_client_uses_the_normalised_target():
    with Client("localhost") as client:
        assert client.target == "localhost:50051"
