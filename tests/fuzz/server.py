"""A real server for the fuzzer: ``python -m lstm_service`` in its own
process on a free 127.0.0.1 port (tools/server_process.py), so a crash is a dead
process and its log (tracebacks, ERROR lines) can be counted."""
from __future__ import annotations

import atexit
import base64
import os
import tempfile
from pathlib import Path
from typing import List, Sequence

from tools import server_process as process

GRPC_SEND_AFTER_LEFT = "ExecuteBatchError raised in core by servicer method"


def session_key_file() -> str:
    """A signing key for ExportSession/ImportSession (the fuzzer imports), removed at exit."""
    handle, path = tempfile.mkstemp(prefix="lstm-fuzz-", suffix=".key")
    # Text, as docs/security.md makes one: the server strips whitespace around a key, so raw
    # random bytes that happen to start or end with one would come out short (31 bytes).
    os.write(handle, base64.b64encode(os.urandom(32)) + b"\n")
    os.close(handle)
    atexit.register(lambda: os.path.exists(path) and os.remove(path))
    return path


class ServerProcess(process.ServerProcess):
    def __init__(self, model_dir: Path, flags: Sequence[str] = ()) -> None:
        super().__init__(["--model", str(model_dir), "--device", "cpu", "--log-level", "WARNING",
                          "--session-key-file", session_key_file(), *flags], timeout=60.0)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def lines(self) -> List[str]:
        """The server's log so far (or all of it, once stopped)."""
        if self.log.closed:
            return self.output.splitlines()
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace").splitlines()

    def tracebacks(self) -> List[str]:
        """Tracebacks in the log, less grpc's own when it sends a reply to a client that
        already left (it logs one with a traceback; grpc/grpc#32551)."""
        return [line for line in self.lines() if "Traceback" in line and GRPC_SEND_AFTER_LEFT not in line]

    def error_lines(self) -> List[str]:
        return [line for line in self.lines() if " ERROR " in line or " CRITICAL " in line]
