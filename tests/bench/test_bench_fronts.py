"""``python -m bench --fronts-compare`` end to end on the tiny model (a real
single-process server, then a real supervisor with an engine and one front),
and the process-tree CPU meter it relies on. No timing assertions: the rows,
names and ratios only have to exist and make sense."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import pytest

POINTS = [(4, 1), (4, 8)]


@pytest.fixture(scope="module")
def fronts_run(run_bench, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fronts")
    # --streams 4 and half-second windows: 4 windows of measuring, the rest is starting servers
    stdout = run_bench("--fronts-compare", "--quick", "--modes", "0,1", "--streams", "4", "--clients", "1",
                       "--duration", "0.5", "--warmup", "0.2", "--model", str(tiny_model_dir), "--device", "cpu",
                       "--out", str(out))
    return stdout, json.loads((out / "results.json").read_text()), out


def test_every_mode_has_every_point(fronts_run):
    stdout, results, out = fronts_run
    rows = results["service"]
    assert sorted((r["fronts"], r["streams"], r["tokens_per_message"]) for r in rows) == [
        (f, n, k) for f in (0, 1) for n, k in POINTS]
    for r in rows:
        assert r["msgs_per_s"] > 0 and r["error_count"] == 0, r["errors"]
        assert r["connections"] == 1  # 4 streams, one client process, 64 streams per channel
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
    table = (out / "results.md").read_text()
    for text in (stdout, table):
        assert "| mode | streams | tok/msg |" in text
        assert text.count("| single | 4 |") == 2 and text.count("| fronts 1 | 4 |") == 2


def test_server_cpu_is_split_by_process(fronts_run):
    _, results, _ = fronts_run
    for r in results["service"]:
        by = r["server_cpu_by_process"]
        assert r["server_cpu"] == pytest.approx(sum(by.values()))
        if r["fronts"] == 0:
            assert set(by) == {"server"}
        else:  # the supervisor only watches; the engine and the front do the work
            assert set(by) == {"supervisor", "engine", "front-0"}
            assert by["engine"] > 0 and by["front-0"] > 0
            assert set(r["server_rss_peak_mb_by_process"]) == set(by)


def test_ceilings_and_ratios(fronts_run):
    stdout, results, _ = fronts_run
    assert sorted((c["ort_threads"], c["batch"], c["tokens_per_message"]) for c in results["ceiling"]) == [
        (t, n, k) for t in (1, 2) for n, k in POINTS]
    for r in results["service"]:
        assert r["over_ceiling_1t"] > 0 and r["over_ceiling_2t"] > 0
        assert r["over_fronts_1"] is None  # no --fronts 2 in this run
        assert (r["over_single"] is None) == (r["fronts"] == 0)
    assert "| batch B | tokens T | 1 thread tok/s | 2 threads tok/s |" in stdout


def test_ratios_compare_modes_at_the_same_point():
    from bench.fronts import add_ratios

    def row(fronts, n, msgs):
        return {"fronts": fronts, "streams": n, "tokens_per_message": 1, "msgs_per_s": msgs, "tokens_per_s": msgs}

    rows = [row(0, 1, 100), row(1, 1, 50), row(2, 1, 80), row(2, 4, 10)]
    ceiling = [{"ort_threads": t, "batch": 1, "tokens_per_message": 1, "tokens_per_s": 200 * t} for t in (1, 2)]
    add_ratios(rows, ceiling)
    assert [r["over_single"] for r in rows] == [None, 0.5, 0.8, None]  # 4 streams: no single-process row
    assert [r["over_fronts_1"] for r in rows] == [None, None, 1.6, None]
    assert rows[2]["over_ceiling_1t"] == 0.4 and rows[2]["over_ceiling_2t"] == 0.2
    assert rows[3]["over_ceiling_1t"] is None


SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
TREE = f"""
import os, subprocess, sys, time
spin = {SPIN!r}
for role, index, seconds in (("engine", "0", 30), ("front", "3", 0.5)):
    env = dict(os.environ, LSTM_ROLE=role, LSTM_FRONT_INDEX=index)
    subprocess.Popen([sys.executable, "-c", spin.format(seconds=seconds)], env=env)
print("started", flush=True)
time.sleep(30)
"""


def test_cpu_meter_sums_the_process_tree_by_role():
    from bench.procs import CpuMeter

    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert parent.stdout.readline() == "started\n"
        time.sleep(0.1)  # let the children exec
        meter = CpuMeter(parent.pid).start()
        time.sleep(1.0)  # the front ends inside the window: it counts up to its last sample
        meter.stop()
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the parent and both children, started in their own group
        parent.wait()
    by = meter.cores_by_process()
    assert set(by) == {"supervisor", "engine", "front-3"}
    assert by["engine"] > 0.1 and by["front-3"] > 0 and by["supervisor"] < by["engine"]
    assert meter.cores() == pytest.approx(sum(by.values()))
    assert meter.peak_rss_kb > 0 and set(meter.peak_rss_kb_by_process) == set(by)
