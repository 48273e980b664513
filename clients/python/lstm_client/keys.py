"""``lstm-client stream --keys``: every keystroke is one step, its predictions shown at once.

The terminal goes into cbreak mode (no line editing, no echo) for the
session and is restored afterwards. What was fed is fed: the session's
state cannot take a byte back, so Backspace and arrow keys only ring the
bell. Enter feeds a newline; Ctrl-D ends.
"""
from __future__ import annotations

import os
import sys
import termios
import tty
from typing import Callable, Iterator, TextIO

END_KEYS = (b"\x04",)  # Ctrl-D
REFUSED_KEYS = (b"\x7f", b"\x08")  # Backspace: a fed byte cannot be taken back
SHOWN_CHARS = 30  # how much of the fed text the status line repeats


def keystrokes(fd: int) -> Iterator[bytes]:
    """The bytes of each keystroke (a multi-byte character arrives whole) until Ctrl-D or end of input."""
    while True:
        key = os.read(fd, 32)
        if not key or key in END_KEYS:
            return
        yield key.replace(b"\r", b"\n")


def visible(text: str) -> str:
    return text.replace("\n", "⏎").replace("\t", "⇥")


def run(stream, fd: int, out: TextIO, render: Callable[[object], str]) -> int:
    """Feed each keystroke to ``stream``; rewrite one status line: the fed text's tail, then ``render(result)``."""
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd, termios.TCSANOW)  # keep keys typed before this point
    print(f"session {stream.session_id}: type; every key is fed at once. Ctrl-D ends.", file=sys.stderr, flush=True)
    fed = ""
    try:
        for key in keystrokes(fd):
            if key in REFUSED_KEYS or key.startswith(b"\x1b"):
                out.write("\a")
                out.flush()
                continue
            result = stream.send(tokens=list(key))
            fed = (fed + key.decode("utf-8", "replace"))[-SHOWN_CHARS:]
            out.write(f"\r\x1b[K{visible(fed)}  {render(result)}")
            out.flush()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.write("\n")
    return 0
