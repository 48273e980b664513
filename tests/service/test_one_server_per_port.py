"""One server per port (service/proc/port_claim.py), with real processes: a second
``python -m lstm_service`` on a port a server already serves, in either mode,
exits 2 with one line naming the port and the first server's pid, and the first
keeps serving alone. Only its own fronts share the port.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest

from tools.server_process import ServerProcess
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

MODES = {"default": ["--fronts", "1"], "single": ["--fronts", "0"]}


def second_server(model_dir, port: int, mode: str, host: str = "127.0.0.1") -> subprocess.CompletedProcess:
    """Start another server on ``port``; it must exit by itself (today's bug: it serves beside the first)."""
    argv = [sys.executable, "-m", "lstm_service", "--model", str(model_dir), "--device", "cpu", "--host",
            host, "--port", str(port), *MODES[mode]]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"a second {mode} server on port {port} started and kept running:\n{err[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def serves_alone(target: str, connections: int = 20) -> None:
    """A session made on one connection is there on every fresh connection (no other server takes some)."""
    with grpc.insecure_channel(target) as channel:
        sid = pb_grpc.LstmServiceStub(channel).CreateSession(pb.CreateSessionRequest(), timeout=10).session.id
    for _ in range(connections):
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            got = pb_grpc.LstmServiceStub(channel).GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
            assert got.session.id == sid


@pytest.mark.parametrize("first", sorted(MODES))
def test_a_second_server_on_a_served_port_refuses_to_start(tiny_model_dir, first):
    with ServerProcess(["--model", str(tiny_model_dir), "--device", "cpu", *MODES[first]]) as server:
        # Either mode, on the same address or on one that overlaps it (0.0.0.0 takes 127.0.0.1's connections too).
        for second, host in [(mode, "127.0.0.1") for mode in sorted(MODES)] + [("default", "0.0.0.0")]:
            done = second_server(tiny_model_dir, server.port, second, host)
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert done.returncode == 2, done.stderr
            assert len(lines) == 1, done.stderr  # one line: no grpc add_port.cc, no "starting"
            assert f"port {server.port} " in lines[0] and f"pid {server.pid})" in lines[0], lines[0]
            assert "add_port" not in done.stderr
        assert server.proc.poll() is None
        serves_alone(server.target)


def test_the_claim_dies_with_its_server_and_the_port_can_be_served_again(tiny_model_dir):
    args = ["--model", str(tiny_model_dir), "--device", "cpu", *MODES["default"]]
    with ServerProcess(args) as first:
        port = first.port
        os.kill(first.pid, signal.SIGKILL)  # a crash: no clean-up runs; its fronts die with it (PDEATHSIG)
        first.proc.wait(10)
    began = time.monotonic()
    with ServerProcess(args, port=port) as again:  # at once: neither the claim nor the fronts' sockets linger
        serves_alone(again.target, connections=3)
    assert time.monotonic() - began < 60


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_port_another_program_listens_on_is_refused_in_one_line(tiny_model_dir, mode):
    with socket.socket() as other:  # another program's listener, sharable as grpc's own are (SO_REUSEPORT)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = second_server(tiny_model_dir, port, mode)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"port {port} on 127.0.0.1 is in use by another program" in lines[0], lines[0]
    assert "add_port" not in done.stderr
