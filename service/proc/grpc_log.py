"""grpc core's TLS handshake lines, as the service's own structured log events.

grpc's C core logs a failed TLS handshake on its own, straight to file descriptor 2,
once per connection, as a raw line no log pipeline can parse:

    I1207 18:55:02.702487 8532 ssl_transport_security.cc:2563] Handshake failed with error
    SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: ...

(the usual cause: a client without TLS, or one that does not trust the server's CA).
Python has no hook into grpc's C logging (absl's log sinks are C++ only), and
GRPC_VERBOSITY would silence every other line of grpc's too, real errors included. So
a TLS server's stderr goes through a relay: the top process (the single process, or
the supervisor before it starts its children, which inherit it) points fd 2 at a pipe
read by a small process of its own, which writes every line through unchanged except
those handshake lines, which become one ``tls_handshake_failed`` event each, in the
configured log format, with what to do about it.

The relay is a separate process, not a thread, so that it outlives a crash of the
server: what the server wrote last before dying (a fatal grpc assertion, a Python
traceback) is still read from the pipe and written out. It exits when every writer
has closed the pipe, i.e. once the server and all its children are gone; it ignores
the signals that stop the server, so it can write their last lines. It is a
grandchild, handed to init at once, so it never shows among the server's children.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
from typing import Callable, Optional

from .logs import event

log = logging.getLogger("service.tls")
HANDSHAKE = re.compile(rb"ssl_transport_security\.cc:\d+\] Handshake failed with (?:fatal )?error (\w+)")
OPENSSL_REASON = re.compile(rb"OPENSSL_internal:([A-Z0-9_]+)")
HINTS = {
    b"WRONG_VERSION_NUMBER": "the client did not speak TLS: it needs TLS and this server's CA "
                             "(lstm-client --tls-ca ca.pem; Client(target, root_certificates=...))",
    b"HTTP_REQUEST": "the client sent plain HTTP: use https, or a gRPC client with TLS",
    b"TLSV1_ALERT_UNKNOWN_CA": "the client does not trust this server's certificate: give it the CA that signed "
                               "--tls-cert",
    b"CERTIFICATE_VERIFY_FAILED": "the client's certificate is not signed by --tls-client-ca",
    b"PEER_DID_NOT_RETURN_A_CERTIFICATE": "mutual TLS: the client sent no certificate (--cert/--key)",
}


def translate(line: bytes) -> Optional[bytes]:
    """None to log ``line`` as an event instead (it is a handshake failure); else the line as is."""
    found = HANDSHAKE.search(line)
    if found is None:
        return line
    reason = OPENSSL_REASON.search(line)
    why = reason.group(1) if reason else found.group(1)
    event(log, "tls_handshake_failed", logging.WARNING, reason=why.decode(errors="replace"),
          hint=HINTS.get(why, "a client could not complete the TLS handshake (wrong CA, no TLS, or an old client)"))
    return None


def pump(source: int, sink: int, handle: Callable[[bytes], Optional[bytes]] = translate) -> None:
    """Copy lines from fd ``source`` to fd ``sink`` until EOF, through ``handle``."""
    pending = b""
    while True:
        try:
            chunk = os.read(source, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            out = handle(line)
            if out is not None:
                _write_all(sink, out + b"\n")
    if pending:
        out = handle(pending)
        if out is not None:
            _write_all(sink, out)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _name_process(name: bytes) -> None:  # pragma: no cover - the relay's side
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(15, name, 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass  # not Linux/glibc: it keeps the server's name


def relay_stderr() -> None:
    """Point this process's fd 2 (and its future children's) at a relay process that turns grpc's
    handshake lines into events. Call before any thread starts (it forks) and after logs.setup."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the relay's side, in a forked process
        try:
            os.close(write_end)
            if os.fork() != 0:
                os._exit(0)  # the relay is the grandchild: init adopts it, the server never waits for it
            _name_process(b"lstm-log-relay")  # what ps and top show for it
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
                signal.signal(sig, signal.SIG_IGN)  # it stops at EOF, after the server's last words
            os.closerange(3, read_end)  # hold nothing of the server's (its port claim, its sockets)
            os.closerange(read_end + 1, os.sysconf("SC_OPEN_MAX"))
            nothing = os.open(os.devnull, os.O_RDWR)
            os.dup2(nothing, 0)  # nor its stdin/stdout: whoever waits for the server's stdout to close
            os.dup2(nothing, 1)  # must not wait for the relay too
            os.close(nothing)
            pump(read_end, 2)
        finally:
            os._exit(0)
    os.close(read_end)
    os.waitpid(child, 0)
    os.dup2(write_end, 2)
    os.close(write_end)
