"""``lstm-client stream --keys`` in a real pseudo-terminal: each keystroke is one step,
answered before the next key is typed; Backspace feeds nothing; Ctrl-D ends."""
import os
import pty
import re
import subprocess
import sys
import threading
import time


def wait_for(output: list, pattern: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, "".join(output)):
        assert time.monotonic() < deadline, f"no {pattern!r} in {''.join(output)!r}"
        time.sleep(0.02)


def test_every_key_is_fed_as_it_is_typed(server):
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "lstm_client", "--target", server.target, "stream", "--keys",
                             "--top-k", "2"], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    output: list = []
    errors: list = []
    for pipe, into in ((proc.stdout, output), (proc.stderr, errors)):
        threading.Thread(target=lambda p=pipe, i=into: i.extend(iter(lambda: p.read1(256).decode(), "")),
                         daemon=True).start()
    try:
        wait_for(errors, "every key is fed at once")  # the terminal is in cbreak mode now
        os.write(master, b"a")
        wait_for(output, r"a  \[1 tokens\] next: ")
        os.write(master, "é".encode())  # two bytes, one key: one step
        wait_for(output, r"aé  \[3 tokens\] next: ")
        os.write(master, b"\x7f")  # Backspace: a bell, nothing fed
        wait_for(output, "\a")
        os.write(master, b"\r")
        wait_for(output, r"aé⏎  \[4 tokens\] next: ")
        os.write(master, b"\x04")
        assert proc.wait(20) == 0, "".join(errors)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert "[2 tokens]" not in "".join(output)


def test_keys_without_a_terminal_is_one_line_and_exit_2(server):
    out = subprocess.run([sys.executable, "-m", "lstm_client", "--target", server.target, "stream", "--keys"],
                         input="ab", capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "needs a terminal" in out.stderr
