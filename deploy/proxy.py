"""Render deploy/nginx.conf.template and run nginx on it (standard library only).

    python deploy/proxy.py render --upstream "127.0.0.1:50061 127.0.0.1:50062" --prefix DIR
    python deploy/proxy.py run    [same options]     # the proxy container's entrypoint
    python deploy/proxy.py check                     # the proxy container's healthcheck

Every option also reads an environment variable PROXY_<NAME> (the flag wins).

Why a renderer: open-source nginx before 1.27.3 (Debian bookworm ships 1.22)
resolves upstream host names once, at start, and a name that resolves to
several addresses would give the hash ring one key for all of them. So each
replica must be its own `server IP:port` line. `run` resolves the names in
--upstream (in compose: the network alias every replica carries, which
Docker's DNS answers with one address per container), writes one line per
address, starts nginx, and re-resolves every --resolve-interval seconds:
when the set changes (`docker compose up --scale replica=5`, a replica
recreated with a new address) it rewrites the file and sends nginx SIGHUP,
a graceful reload that keeps open streams on the old workers. SIGTERM or
SIGINT to `run` asks nginx for a graceful stop (SIGQUIT).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx.conf.template"
PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")

# name: (default, help). Each is --name-with-dashes and PROXY_NAME.
OPTIONS: Dict[str, tuple] = {
    "upstream": ("lstm-replica:50051", "replica host:port entries, space or comma separated; names are resolved"),
    "listen": ("0.0.0.0:50051", "address:port nginx listens on"),
    "prefix": ("/tmp/nginx", "writable directory for nginx.conf, pid, temp files"),
    "template": (str(TEMPLATE), "the nginx.conf template"),
    "nginx": ("nginx", "nginx binary"),
    "workers": ("auto", "nginx worker_processes"),
    "stream_timeout": ("3600s", "idle time allowed between two messages of a call / on a connection"),
    "shutdown_timeout": ("20s", "longest graceful stop with streams still open"),
    "fail_timeout": ("5s", "a replica that refused a connection is skipped this long"),
    "error_log": ("stderr", "nginx error log: a path or stderr"),
    "log_level": ("warn", "nginx error log level"),
    "access_log": ("stdout", "access log: a path, stdout (through a pipe this process copies) or off"),
    "resolve_interval": ("5", "seconds between DNS look-ups of --upstream (run)"),
    "start_timeout": ("120", "seconds run waits for the first replica address"),
}


def parse_upstreams(text: str) -> List[tuple]:
    """'a:1, b:2 [::1]:3' -> [('a', 1), ('b', 2), ('::1', 3)]."""
    entries = []
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"upstream {item!r} is not host:port")
        entries.append((host.strip("[]"), int(port)))
    if not entries:
        raise ValueError("no upstream given")
    return entries


def resolve(entries: Sequence[tuple]) -> List[str]:
    """Every address of every entry as 'ip:port' (IPv6 bracketed), sorted, no repeats.

    A name that does not resolve (yet) contributes nothing.
    """
    found = set()
    for host, port in entries:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        for family, _type, _proto, _name, sockaddr in infos:
            ip = sockaddr[0]
            found.add(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return sorted(found, key=_address_order)


def _address_order(address: str):
    host, _, port = address.rpartition(":")
    ip = ipaddress.ip_address(host.strip("[]"))
    return (ip.version, ip, int(port))


def render(template: str, values: Dict[str, str]) -> str:
    missing = sorted(set(PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise ValueError(f"no value for template placeholders {missing}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def access_log_path(args: argparse.Namespace) -> str:
    if args.access_log == "stdout":
        return str(Path(args.prefix).resolve() / "access.pipe")
    return args.access_log


def copy_access_log(args: argparse.Namespace) -> None:
    """For access_log=stdout: a FIFO nginx writes to and a thread copying it to our stdout.

    Not /dev/stdout: an unprivileged nginx may not reopen the container's
    stdout (owned by root), while a FIFO of our own it always can. The FIFO
    is held open read-write, so nginx's reopening on reload never ends it.
    """
    if args.access_log != "stdout":
        return
    fifo = Path(access_log_path(args))
    fifo.parent.mkdir(parents=True, exist_ok=True)
    if not fifo.is_fifo():
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDWR)

    def pump() -> None:
        out = sys.stdout.buffer
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            out.write(chunk)
            out.flush()

    threading.Thread(target=pump, name="access-log", daemon=True).start()


def template_values(args: argparse.Namespace, servers: Sequence[str]) -> Dict[str, str]:
    if not servers:
        raise ValueError("at least one replica address is needed")
    lines = "\n".join(
        f"        server {s} max_fails=1 fail_timeout={args.fail_timeout};" for s in servers
    )
    return {
        "SERVERS": lines,
        "LISTEN": args.listen,
        "WORKERS": str(args.workers),
        "STREAM_TIMEOUT": args.stream_timeout,
        "SHUTDOWN_TIMEOUT": args.shutdown_timeout,
        "ERROR_LOG": args.error_log,
        "LOG_LEVEL": args.log_level,
        "ACCESS_LOG": access_log_path(args),
    }


def write_config(args: argparse.Namespace, servers: Sequence[str]) -> Path:
    """Render into <prefix>/nginx.conf (atomically) and create the temp dirs."""
    prefix = Path(args.prefix).resolve()
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    text = render(Path(args.template).read_text(), template_values(args, servers))
    conf = prefix / "nginx.conf"
    partial = prefix / "nginx.conf.new"
    partial.write_text(text)
    os.replace(partial, conf)
    return conf


def nginx_command(args: argparse.Namespace, conf: Path) -> List[str]:
    # -e: where nginx logs before it has read the file (1.19.5+)
    return [args.nginx, "-p", str(Path(args.prefix).resolve()) + "/", "-c", str(conf), "-e", args.error_log]


def log(message: str) -> None:
    print(f"proxy: {message}", file=sys.stderr, flush=True)


def wait_for_servers(entries, timeout: float, interval: float, lookup: Callable = resolve) -> List[str]:
    deadline = time.monotonic() + timeout
    while True:
        servers = lookup(entries)
        if servers or time.monotonic() >= deadline:
            return servers
        time.sleep(min(interval, 1.0))


def refresh(args, entries, servers: List[str], nginx: subprocess.Popen, lookup: Callable = resolve) -> List[str]:
    """Look the replicas up again; on a change rewrite the file and reload nginx.

    An empty answer (a DNS hiccup, every replica restarting) keeps the last
    set: nginx's own failover then covers the replicas that are down.
    """
    now = lookup(entries)
    if not now or now == servers:
        return servers
    log(f"replicas changed: {' '.join(servers)} -> {' '.join(now)}; reloading")
    write_config(args, now)
    nginx.send_signal(signal.SIGHUP)  # graceful: open streams finish on the old workers
    return now


def run(args: argparse.Namespace) -> int:
    entries = parse_upstreams(args.upstream)
    interval = float(args.resolve_interval)
    servers = wait_for_servers(entries, float(args.start_timeout), interval)
    if not servers:
        log(f"no address for {args.upstream!r} after {args.start_timeout}s: are any replicas running?")
        return 1
    conf = write_config(args, servers)
    copy_access_log(args)
    log(f"upstreams {' '.join(servers)}; listening on {args.listen}")
    nginx = subprocess.Popen(nginx_command(args, conf))
    stopping = threading.Event()

    def stop(signum, _frame):
        log(f"{signal.Signals(signum).name}: graceful stop")
        stopping.set()
        if nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, stop)
    while nginx.poll() is None and not stopping.wait(interval):
        servers = refresh(args, entries, servers, nginx)
    code = nginx.wait()
    log(f"nginx exited with {code}")
    return 0 if stopping.is_set() and code == 0 else (code or 1)


def check(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        print(f"proxy not accepting on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python deploy/proxy.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("render", "run", "check"))
    for name, (default, help_text) in OPTIONS.items():
        env = "PROXY_" + name.upper()
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=os.environ.get(env, default),
                            help=f"{help_text} [env {env}; default {default}]")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return check(args)
        if args.command == "render":
            servers = resolve(parse_upstreams(args.upstream))
            print(write_config(args, servers))
            return 0
        return run(args)
    except (ValueError, OSError) as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
