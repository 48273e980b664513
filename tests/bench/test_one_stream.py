"""``python -m bench.one_stream``: a real grpc.aio echo server process and real clients, both
shapes measured and printed. No timing assertions: the figures have to be there and be sane."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.one_stream import run, table

ROOT = Path(__file__).resolve().parents[2]


def test_both_shapes_answer_every_message_and_count_the_servers_cpu():
    one, many = run(in_flight=8, messages=400)
    assert (one["streams"], one["in_flight_per_stream"]) == (1, 8)
    assert (many["streams"], many["in_flight_per_stream"]) == (8, 1)
    for row in (one, many):
        assert row["messages"] >= 400 and row["msgs_per_s"] > 0 and row["server_cpu_us_per_msg"] > 0
    text = table([one, many])
    assert "| 1 stream(s) x 8 in flight |" in text and "one stream / 8 streams" in text


def test_the_command_prints_its_table():
    out = subprocess.run([sys.executable, "-m", "bench.one_stream", "--in-flight", "4", "--messages", "200"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "| 4 stream(s) x 1 in flight |" in out and "server CPU per message" in out
