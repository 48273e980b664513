"""Does the server at a target speak TLS? For the hint on a plaintext client's UNAVAILABLE,
which Client, AsyncClient and lstm-client add: "the server speaks TLS: pass --tls-ca".

A client without TLS that connects to a TLS server sees only "Socket closed": the
server read the HTTP/2 preface as a broken TLS record and hung up. One TLS handshake
(no verification: the question is only whether TLS answers) tells that case apart
from a server that is down or unreachable.
"""
from __future__ import annotations

import socket
import ssl
from typing import Optional, Tuple

import grpc

from .errors import ClientError
from .targets import normalize_target


def host_port(target: str) -> Optional[Tuple[str, int]]:
    """(host, port) of a ``host:port`` / ``[v6]:port`` / ``dns:///host:port`` target; None for others."""
    try:
        target = normalize_target(target)
    except ValueError:
        return None
    if target.startswith(("unix:", "unix-abstract:", "vsock:")):
        return None
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme):].split(",")[0]  # ipv4:a:1,b:2 -> the first address
    host, _, port = target.rpartition(":")
    if not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def speaks_tls(target: str, timeout: float = 2.0) -> bool:
    """True if a TLS handshake with ``target`` completes, or the server answers it with a TLS alert."""
    address = host_port(target)
    if address is None:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only whether TLS answers; nothing is sent over it
    context.set_alpn_protocols(["h2"])  # as a gRPC client would: a gRPC server requires it
    try:
        with socket.create_connection(address, timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=address[0]):
                return True
    except ssl.SSLError as exc:  # a TLS alert from the server (e.g. mutual TLS without a certificate): TLS
        return "ALERT" in str(exc).upper()
    except OSError:
        return False


TLS_HINT = ("the server speaks TLS: pass --tls-ca with the CA that signed its certificate (or --tls if a public "
            "CA did); Client(target, root_certificates=...) in Python")


def may_be_tls_mismatch(error: ClientError) -> bool:
    """A plaintext client's UNAVAILABLE that a TLS server would cause: the connection was closed
    on it, and no server status came with it (a server's own UNAVAILABLE carries an ErrorInfo)."""
    details = error.details().lower()
    return (error.code() == grpc.StatusCode.UNAVAILABLE and not error.reason
            and ("socket closed" in details or "connection reset" in details))


def with_tls_hint(error: ClientError, target: str) -> ClientError:
    """``error`` with TLS_HINT added to its message if the server at ``target`` speaks TLS
    (call it only for a plaintext channel); else ``error`` itself."""
    if not may_be_tls_mismatch(error) or not speaks_tls(target):
        return error
    hinted = ClientError(error.code(), f"{error.details()}; {TLS_HINT}", reason=error.reason, domain=error.domain,
                         metadata=error.metadata, field_violations=error.field_violations,
                         retry_delay=error.retry_delay)
    return hinted
