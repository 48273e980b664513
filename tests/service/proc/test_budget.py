"""The cost timers (service/proc/budget.py): nothing when off; with LSTM_BUDGET set, totals per
part and a dump on SIGUSR2 (a real signal to a real process, the server's event loop)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lstm_service.service.proc import budget

ROOT = Path(__file__).resolve().parents[3]


def test_off_by_default_and_then_adds_nothing():
    assert "LSTM_BUDGET" not in os.environ and budget.ON is False
    mark = budget.start()
    assert mark is None
    budget.add("test.part", mark)
    budget.add_wall("test.part", mark)
    budget.count("test.part")
    assert "test.part" not in budget.totals()


def test_on_it_sums_parts_and_dumps_on_sigusr2(tmp_path):
    # A child process with LSTM_BUDGET set: the switch is read once, at import.
    code = """
import asyncio, os, signal, time
from lstm_service.service.proc import budget

async def main():
    loop = asyncio.get_running_loop()
    assert budget.install(loop)
    mark = budget.start()
    sum(range(200000))                      # some CPU on this thread
    budget.add("cpu.part", mark, weight=4)  # a batch of four
    mark = budget.start()
    await asyncio.sleep(0.02)               # wall without CPU
    budget.add_wall("wait.part", mark)
    budget.count("write", 3)
    os.kill(os.getpid(), signal.SIGUSR2)
    await asyncio.sleep(0.2)

asyncio.run(main())
"""
    env = dict(os.environ, LSTM_BUDGET=str(tmp_path), LSTM_ROLE="engine")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    ready = list(tmp_path.glob("*.ready"))
    assert len(ready) == 1 and ready[0].read_text() == "engine"
    (dump,) = tmp_path.glob(f"{ready[0].stem}-*.json")
    got = json.loads(dump.read_text())
    assert got["role"] == "engine" and got["process_cpu_ns"] > 0
    cpu, wait, write = got["parts"]["cpu.part"], got["parts"]["wait.part"], got["parts"]["write"]
    assert cpu["events"] == 1 and cpu["msgs"] == 4 and cpu["cpu_ns"] > 0
    assert cpu["wall_ns"] >= 4 * cpu["cpu_ns"] * 0.5  # wall is counted once per message of the batch
    assert wait["events"] == 1 and wait["wall_ns"] >= 15_000_000 and wait["cpu_ns"] == 0
    assert write == {"events": 3, "msgs": 3, "wall_ns": 0, "cpu_ns": 0}


def test_dump_writes_whole_files(tmp_path):
    path = budget.dump(str(tmp_path))
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not list(tmp_path.glob("*.tmp"))
