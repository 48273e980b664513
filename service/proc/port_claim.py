"""One server per port: an exclusive claim that the single process or the supervisor
takes before it serves, so a second ``lstm-serve --port P`` refuses to start.

The fronts of ``--fronts N`` must share their port (SO_REUSEPORT), and the kernel lets
any other socket of the same user join a SO_REUSEPORT port too: a second server would
start beside the first and connections (and so sessions) would scatter over both. A
bind probe without SO_REUSEPORT sees the first server, but cannot name it, and two
servers starting at the same moment could both pass it before either binds. So the
server first takes a claim on its address, atomically, held for its whole life:

    \\0lstm-service-port-<P>-<host>     a listening UNIX socket in the abstract namespace

Why this and not a lock file: the kernel drops the name when its holder dies, however
it dies (SIGKILL included), so there is never a stale claim to clean up, and nothing
needs a writable directory; the abstract namespace belongs to the network namespace,
exactly the scope of the TCP port (a container with its own network has its own ports
and its own claims); and the holder's pid is readable by anyone who connects
(SO_PEERCRED), so the refusal can name the other server. Only the single process or
the supervisor holds it; children are started with close_fds, so a claim never
outlives its server in a child.

The claim is per address (--host and port): replicas on one port but different
addresses (127.0.0.2:P, 127.0.0.3:P) are separate servers. Addresses that overlap
(0.0.0.0:P and 127.0.0.2:P) are found by a plain bind probe without SO_REUSEPORT
(``check_free``), which the kernel refuses wherever the two could share connections,
as it does for a program that is not lstm-serve holding the port.
"""
from __future__ import annotations

import errno
import hashlib
import os
import socket
import struct
import time
from typing import List, Optional

from ..api.errors import ConfigError

NAME = "lstm-service-port-{port}-{host}"
WILDCARDS = ("0.0.0.0", "::")
PROBE_SECONDS = 3.0  # a port held by a dying predecessor (its fronts die just after it) is waited for
HINT = "pick another with --port or LSTM_PORT (0 picks a free one), or --host"


class PortClaim:
    """A held claim on one port; ``answer()`` lets go of the probes that asked who holds it."""

    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock
        self.port = port

    def fileno(self) -> int:
        return self.sock.fileno()

    def answer(self) -> None:
        """Accept and close pending probes (they read our pid at connect time), so the
        backlog never fills and later probes can still read it."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # BlockingIOError: none left
                return
            conn.close()

    def close(self) -> None:
        self.sock.close()


def _name(host: str, port: int) -> str:
    name = NAME.format(port=port, host=host)
    if len(name) > 100:  # the abstract namespace allows 107 bytes: a long DNS name goes by its digest
        name = NAME.format(port=port, host=hashlib.sha256(host.encode()).hexdigest()[:32])
    return "\0" + name


def holder_pid(host: str, port: int) -> Optional[int]:
    """The pid of the process holding the claim on ``host:port``; None if nobody does or it cannot tell."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(_name(host, port))
        pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        return pid or None
    except OSError:
        return None
    finally:
        sock.close()


def _served(port: int, pid: Optional[int]) -> str:
    who = f"pid {pid}" if pid else "its pid could not be read"
    return f"port {port} is already served by another lstm-serve ({who}); stop it first or {HINT}"


def claim(host: str, port: int) -> PortClaim:
    """Claim ``host:port`` for this process; ConfigError naming the holder if another server has it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(_name(host, port))
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigError(_served(port, holder_pid(host, port))) from exc
    sock.listen(16)
    sock.setblocking(False)
    return PortClaim(sock, port)


def check_free(host: str, port: int, wait: float = PROBE_SECONDS) -> None:
    """Bind ``host:port`` without SO_REUSEPORT and let go: ConfigError if something else
    holds it or an overlapping address (another server on 0.0.0.0, another program, or
    a server of an older version without the claim).

    SO_REUSEADDR as grpc sets it, so connections of a previous server lingering in
    TIME_WAIT do not count. A busy port is tried again for up to ``wait`` seconds: after a
    crash the supervisor's fronts die just after it (PR_SET_PDEATHSIG), and a restart at
    once must not find their sockets still there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise ConfigError(_refusal(host, port, exc)) from exc
        time.sleep(0.1)


def _refusal(host: str, port: int, exc: OSError) -> str:
    if exc.errno != errno.EADDRINUSE:
        return f"port {port} on {host} cannot be bound: {exc.strerror}; {HINT}"
    for other in dict.fromkeys((host, *WILDCARDS, *claimed_hosts(port))):  # an lstm-serve overlapping: name it
        pid = holder_pid(other, port)
        if pid and pid != os.getpid():  # our own claim on ``host`` is not the other server
            return _served(port, pid)
    return f"port {port} on {host} is in use by another program; {HINT}"


def claimed_hosts(port: int, table: str = "/proc/net/unix") -> List[str]:
    """The addresses with a claim on ``port`` (abstract names show in /proc/net/unix with an @)."""
    prefix = "@" + NAME.format(port=port, host="")
    try:
        with open(table) as lines:
            names = [line.split()[-1] for line in lines if len(line.split()) >= 8]
    except OSError:
        return []
    return [name[len(prefix):] for name in names if name.startswith(prefix)]


def claim_free(host: str, port: int) -> PortClaim:
    """``claim`` then ``check_free``: the address is ours alone, or ConfigError."""
    held = claim(host, port)
    try:
        check_free(host, port)
    except BaseException:
        held.close()
        raise
    return held
