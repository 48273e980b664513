"""``--fronts N`` (N >= 1): one engine process and N front processes, kept running.

    supervisor (this process: no model, no gRPC server)
      ├── engine process   service/proc/engine_process.py: the model, every session, the batcher
      └── front 0..N-1     service/proc/app.py with a RemoteEngine: gRPC on the one --port

The fronts all listen on the same port (SO_REUSEPORT: the kernel spreads new
connections over them) and reach the engine over a ZeroMQ link on an
abstract-namespace ipc address private to this server (service/link/transport.py).
The supervisor holds the port bound (not listening) for the server's whole
life, so ``--port 0`` picks one port for every front and a restarted front
gets the same one. No other server may join them there: the supervisor holds the
port's claim (service/proc/port_claim.py) for the server's whole life.

A child that dies is started again (after 0.5 s, doubling up to 5 s while it
keeps dying): a dead engine takes the fronts to NOT_SERVING until the new
one answers (sessions come back from their snapshots with --state-store);
what a dead front held is released by the engine. A child that exits with
status 2 (bad configuration, e.g. no model) stops the whole server with 2.

SIGTERM/SIGINT: the fronts drain (NOT_SERVING, refuse new calls, finish
in-flight ones within --grace), then the engine snapshots and exits. The
children ignore SIGTERM and SIGINT (a signal to the whole process group must
not stop the engine before the fronts have drained) and stop on the
supervisor's STOP_SIGNAL.
SIGHUP goes to the fronts (they re-read --tokens-file).
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..link import transport as link
from . import port_claim
from .config import Config
from ..api.errors import ConfigError
from .logs import event

log = logging.getLogger("service.supervisor")

ROLE_ENV, LINK_ENV, INDEX_ENV = "LSTM_ROLE", "LSTM_LINK", "LSTM_FRONT_INDEX"
# The supervisor's order to a child to stop (a front drains, the engine snapshots). Not SIGTERM:
# a process manager may send SIGTERM to the whole group at once (systemd's default, `make`,
# a terminal's Ctrl-C is SIGINT), and the engine must outlive the fronts' drain.
STOP_SIGNAL = signal.SIGUSR1
CONFIG_ERROR = 2
MAX_BACKOFF = 5.0


def available_cores(cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container's --cpus), which affinity does not show."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path(cgroup_cpu_max).read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return cores


def default_fronts() -> int:
    """One front per core but one (the engine's), at least one."""
    return max(1, available_cores() - 1)


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) ``host:port`` with SO_REUSEPORT, so the fronts can share it; port 0 picks one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server?); pick another with --port or "
            "LSTM_PORT (0 picks a free one), or --host") from exc
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A child is killed with the supervisor (even by SIGKILL): no orphan keeps the port or the
    model. SIGKILL, not SIGTERM: a server whose supervisor crashed has crashed; a draining
    orphan would go on taking connections on the shared port."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Child:
    def __init__(self, role: str, index: int, argv: List[str], env: Dict[str, str]) -> None:
        self.role, self.index, self.argv, self.env = role, index, argv, env
        self.proc: Optional[subprocess.Popen] = None
        self.backoff = 0.5
        self.restart_at = 0.0
        self.started_at = 0.0

    @property
    def name(self) -> str:
        return self.role if self.role == "engine" else f"front-{self.index}"

    def start(self) -> None:
        env = dict(os.environ, **self.env, **{ROLE_ENV: self.role, INDEX_ENV: str(self.index)})
        self.proc = subprocess.Popen(self.argv, env=env, preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)


class Supervisor:
    def __init__(self, config: Config, argv: Sequence[str], fronts: int) -> None:
        self.config = config
        self.fronts = fronts
        self.stopping = False
        self.stopped_by = ""  # the signal that stopped the server
        # The port is this server's alone (service/proc/port_claim.py): claimed before the fronts
        # bind it, so a second server refuses to start instead of sharing it with them.
        held = port_claim.claim_free(config.host, config.port) if config.port else None
        try:
            self._port_holder = reserve_port(config.host, config.port)
        except BaseException:
            if held is not None:
                held.close()
            raise
        self.port = self._port_holder.getsockname()[1]
        self._claim = held or port_claim.claim(config.host, self.port)  # --port 0: the port the kernel picked
        self.address = link.new_address()
        # Children run the same command line, with the port fixed (for --port 0) and the link named.
        command = [sys.executable, "-m", "lstm_service", *argv, "--port", str(self.port)]
        env = {LINK_ENV: self.address}
        self.engine = Child("engine", 0, command, env)
        self.front_children = [Child("front", i, command, env) for i in range(fronts)]

    @property
    def children(self) -> List[Child]:
        return [self.engine, *self.front_children]

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda *_: self._to_fronts(signal.SIGHUP))
        for child in self.children:
            child.start()
        event(log, "supervising", address=f"{self.config.host}:{self.port}", fronts=self.fronts,
              engine_pid=self.engine.proc.pid if self.engine.proc else 0,
              front_pids=",".join(str(c.proc.pid) for c in self.front_children if c.proc), link=self.address)
        status = self._watch()
        if self.stopped_by:
            event(log, "stop_requested", by="signal", signal=self.stopped_by)
        self._shut_down()
        return status

    def _on_stop_signal(self, signum: int, _frame) -> None:
        self.stopped_by = signal.Signals(signum).name  # logged by the main loop, not in the handler
        self.stopping = True

    def _to_fronts(self, sig: int) -> None:
        for child in self.front_children:
            child.signal(sig)

    def _watch(self) -> int:
        while not self.stopping:
            for child in self.children:
                code = child.proc.poll() if child.proc else None
                if code is None:
                    continue
                if code == CONFIG_ERROR:
                    event(log, "child_failed", logging.ERROR, child=child.name, status=code,
                          why="bad configuration; stopping the server")
                    self.stopping = True
                    return CONFIG_ERROR
                self._restart_later(child, code)
            self._claim.answer()
            time.sleep(0.1)
        return 0

    def _restart_later(self, child: Child, code: int) -> None:
        now = time.monotonic()
        if child.restart_at == 0.0:
            if now - child.started_at > 30:  # it had been up a while: not a crash loop
                child.backoff = 0.5
            child.restart_at = now + child.backoff
            event(log, "child_exited", logging.ERROR, child=child.name, status=code, restart_in=child.backoff)
            child.backoff = min(MAX_BACKOFF, child.backoff * 2)
        elif now >= child.restart_at:
            child.restart_at = 0.0
            child.start()
            event(log, "child_restarted", child=child.name, pid=child.proc.pid if child.proc else 0)

    def _shut_down(self) -> None:
        grace = self.config.grace
        self._to_fronts(STOP_SIGNAL)
        self._wait(self.front_children, grace + 5)
        self.engine.signal(STOP_SIGNAL)
        self._wait([self.engine], 15)
        self._port_holder.close()
        self._claim.close()
        event(log, "stopped")

    @staticmethod
    def _wait(children: List[Child], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                event(log, "child_killed", logging.WARNING, child=child.name, why="did not stop in time")
                child.proc.kill()
                child.proc.wait()
