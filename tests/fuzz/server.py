"""A real server for the fuzzer: ``python -m lstm_service`` in its own
process on a free 127.0.0.1 port, so a crash is a dead process and its log
(tracebacks, ERROR lines) can be counted."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import List, Sequence

import grpc


GRPC_SEND_AFTER_LEFT = "ExecuteBatchError raised in core by servicer method"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model_dir: Path, flags: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "lstm_service", "--model", str(model_dir), "--port", str(self.port),
                   "--device", "cpu", "--log-level", "WARNING", *flags]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     errors="replace")
        self.log: List[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._wait_ready()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def _wait_ready(self, timeout: float = 60.0) -> None:
        with grpc.insecure_channel(self.target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=timeout)
            except grpc.FutureTimeoutError:
                self.stop()
                raise RuntimeError(f"server did not start: {self.log[-5:]}") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tracebacks(self) -> List[str]:
        """Tracebacks in the log, less grpc's own when it sends a reply to a client that
        already left (it logs one with a traceback; grpc/grpc#32551)."""
        return [line for line in self.log if "Traceback" in line and GRPC_SEND_AFTER_LEFT not in line]

    def error_lines(self) -> List[str]:
        return [line for line in self.log if " ERROR " in line or " CRITICAL " in line]

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self._reader.join(5)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
