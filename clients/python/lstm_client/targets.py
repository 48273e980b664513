"""Server addresses: ``host:port``, with the service's port when none is given.

gRPC itself reads a bare ``localhost`` as ``localhost:443``, which is never
this service; here it means ``localhost:50051``. Addresses with a scheme
(``dns:///...``, ``unix:...``) pass through unchanged; ``http://`` and
``https://`` are refused with a hint (gRPC itself would say only that the
name does not resolve).
"""
from __future__ import annotations

DEFAULT_PORT = 50051
DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_PORT}"
SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


def normalize_target(target: str) -> str:
    """``host`` -> ``host:50051``; ``::1`` -> ``[::1]:50051``; a bad port -> ValueError."""
    target = target.strip()
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):  # a URL: gRPC's resolver would only say "no address"
        tls = " and add --tls (https:// means TLS)" if scheme.lower() == "https" else ""
        raise ValueError(f"target {target!r}: a gRPC target takes no {scheme}:// scheme; drop it{tls}, "
                         f"e.g. {rest.rstrip('/') or 'localhost:50051'}")
    if target.startswith(SCHEMES):
        return target
    if target.startswith("["):  # [v6] or [v6]:port
        host, _, rest = target.partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"target {target!r}: expected [ipv6]:port")
        host, port = host + "]", rest[1:] if rest else ""
    elif target.count(":") > 1:  # a bare IPv6 address cannot carry a port
        host, port = f"[{target}]", ""
    else:
        host, _, port = target.partition(":")
    if host in ("", "[]"):
        raise ValueError(f"target {target!r}: no host (expected host:port, e.g. {DEFAULT_TARGET})")
    if not port:
        return f"{host}:{DEFAULT_PORT}"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"target {target!r}: the port must be a number in 1-65535")
    return f"{host}:{port}"
