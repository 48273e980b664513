"""The benchmark harness, end to end in --quick mode against the tiny model:
a real server subprocess, a real echo server, real channels. No timing
assertions: the figures only have to exist and make sense."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POINTS = [(1, 1), (1, 8), (4, 1), (4, 8)]


@pytest.fixture(scope="module")
def quick_run(run_bench, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    stdout = run_bench("--quick", "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(out))
    return stdout, json.loads((out / "results.json").read_text()), out


def test_json_has_every_section(quick_run):
    _, results, _ = quick_run
    for key in ("machine", "settings", "providers", "ceiling", "echo", "service", "ratios", "targets", "notes"):
        assert key in results, key
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["onnxruntime"] != "missing"
    assert "CPUExecutionProvider" in results["providers"]["ceiling"]
    assert "CPUExecutionProvider" in results["providers"]["service"]
    for section, key in (("ceiling", "batch"), ("echo", "streams"), ("service", "streams")):
        assert sorted((r[key], r["tokens_per_message"]) for r in results[section]) == POINTS, section


def test_service_and_echo_answer_every_message(quick_run):
    _, results, _ = quick_run
    for section in ("echo", "service"):
        for row in results[section]:
            assert row["msgs_per_s"] > 0 and row["messages"] > 0, row
            assert row["tokens_per_s"] == pytest.approx(row["msgs_per_s"] * row["tokens_per_message"])
            assert row["error_count"] == 0 and row["errors"] == {}, row["errors"]
            assert row["opened"] == row["streams"]
            lat = row["latency_ms"]
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
            assert row["server_cpu"] > 0 and row["client_cpu"] > 0 and row["server_rss_peak_mb"] > 0
    for row in results["ceiling"]:
        assert row["tokens_per_s"] > 0 and row["runs"] >= 5
        if row["batch"] == 1:  # the one-row call as is, beside the call the server makes
            assert row["row_ms"]["p50"] > 0 and row["gap_ms"]["p50"] > 0 and row["lone_copies"] in (1, 2)
        else:
            assert "row_ms" not in row


def test_server_batch_histogram_counts_the_steps(quick_run):
    _, results, _ = quick_run
    for row in results["service"]:
        hist = row["batch_histogram"]
        assert hist is not None and hist["count"] > 0 and sum(hist["buckets"].values()) == hist["count"]
        assert 1.0 <= hist["mean"] <= row["streams"]
        assert 0 < row["ort_busy"] <= 1.5


def test_ratios_and_targets_are_computed(quick_run):
    stdout, results, out = quick_run
    assert len(results["ratios"]) == len(POINTS)
    for r in results["ratios"]:
        assert r["service_over_echo"] > 0 and r["service_over_ceiling"] > 0
    statuses = {t["target"]: t["status"] for t in results["targets"]}
    assert statuses["1 stream K=1: p50 <= echo p50 + 2x the ORT B=1 step"] in ("PASS", "MISS")
    assert statuses["64 streams K=1: >= 50% of the gRPC echo floor's msg/s"] == "SKIP"  # --quick stops at 4 streams
    for n, plural in ((1, ""), (8, "s")):  # the noisy-neighbour rows ran in the same run
        assert statuses[f"noisy neighbour: victim p50 rise <= 5 ms beside {n} 4096-token looper{plural}"] in (
            "PASS", "MISS")
    assert [r["neighbours"] for r in results["noisy"]] == [0, 1, 8]
    assert all(r["steps"] > 0 and r["p50_ms"] > 0 for r in results["noisy"])
    assert "svc/echo" in stdout and "Targets:" in stdout and "required" in stdout
    assert "| streams | tok/msg |" in (out / "results.md").read_text()
    pytest.importorskip("matplotlib")
    assert (out / "throughput.png").stat().st_size > 1000


def _point(streams, k, msgs, p50=1.0, p99=2.0, errors=0):
    return {"streams": streams, "tokens_per_message": k, "msgs_per_s": msgs, "tokens_per_s": msgs * k,
            "latency_ms": {"p50": p50, "p99": p99}, "errors": {"UNAVAILABLE": errors} if errors else {},
            "error_count": errors, "server_rss_peak_mb": 100.0}


def _ceiling(batch, k, tokens_per_s, run_ms=0.3):
    return {"batch": batch, "tokens_per_message": k, "tokens_per_s": tokens_per_s, "run_ms": {"p50": run_ms}}


def test_targets_pass_and_miss_on_their_thresholds():
    from bench.targets import evaluate

    busy = _point(64, 1, 5000, p50=10, p99=31)
    busy["server_cpu"], busy["machine_cpu"] = 1.59, 1.9
    results = {
        "machine": {"cores": 2},
        "service": [_point(1, 1, 1000, p50=0.85), busy, _point(64, 8, 1000), _point(256, 1, 4999, errors=2)],
        "echo": [_point(1, 1, 3000, p50=0.3), _point(64, 1, 10001)],
        "ceiling": [_ceiling(1, 1, 3000, run_ms=0.3), _ceiling(64, 8, 10000)],
        "noisy": [{"neighbours": 0, "p50_ms": 1.0}, {"neighbours": 1, "p50_ms": 6.0},
                  {"neighbours": 8, "p50_ms": 6.01}],
    }
    targets = evaluate(results)
    got = {t["target"]: t["status"] for t in targets}
    assert got["1 stream K=1: p50 <= echo p50 + 2x the ORT B=1 step"] == "PASS"  # 0.85 <= 0.3 + 2 x 0.3
    assert got["64 streams K=1: >= 50% of the gRPC echo floor's msg/s"] == "MISS"  # 5000 / 10001
    assert got["64 streams K=1: the server uses >= 1.6 of 2 cores"] == "MISS"  # 1.59
    assert got["64 streams K=1: p99 <= 3x p50"] == "MISS"  # 3.1x
    assert got["64 streams K=8: >= 80% of the onnxruntime ceiling (B=64, T=8) tokens/s"] == "PASS"  # 8000 / 10000
    assert got["noisy neighbour: victim p50 rise <= 5 ms beside 1 4096-token looper"] == "PASS"  # +5.00
    assert got["noisy neighbour: victim p50 rise <= 5 ms beside 8 4096-token loopers"] == "MISS"  # +5.01
    assert got["256 streams K=1: no errors"] == "MISS"
    assert got["256 streams K=1: throughput not below 64 streams"] == "MISS"
    assert got["256 streams K=1: bounded memory"] == "INFO"
    lone = next(t for t in targets if t["target"].startswith("1 stream"))
    assert lone["measured"] == 0.85 and lone["required"] == pytest.approx(0.9) and lone["bound"] == "<="


def test_baseline_is_judged_by_todays_rules_beside_this_run():
    from bench.targets import compare, compare_table

    before = {"machine": {"cores": 2}, "service": [_point(64, 1, 2000)], "echo": [_point(64, 1, 8000)]}
    after = {"machine": {"cores": 2}, "service": [_point(64, 1, 4400)], "echo": [_point(64, 1, 8000)]}
    rows = {r["target"]: r for r in compare(before, after)}
    echo = rows["64 streams K=1: >= 50% of the gRPC echo floor's msg/s"]
    assert (echo["before"], echo["before_status"], echo["after"], echo["after_status"]) == (0.25, "MISS", 0.55, "PASS")
    assert rows["1 stream K=1: p50 <= echo p50 + 2x the ORT B=1 step"]["after_status"] == "SKIP"
    assert "| 64 streams K=1: >= 50% of the gRPC echo floor's msg/s | 0.50 | 0.25 MISS | 0.55 PASS |" in \
        compare_table(list(rows.values()))


def test_batch_histogram_is_the_difference_of_two_scrapes():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from bench.scrape import batch_histogram, busy_seconds

    registry = CollectorRegistry()
    sizes = Histogram("lstm_batch_size", "x", buckets=(1, 2, 4, 8), registry=registry)
    runs = Histogram("lstm_ort_run_seconds", "x", registry=registry)
    sizes.observe(1)
    runs.observe(0.5)
    before = generate_latest(registry).decode()
    for size in (1, 3, 3, 8):
        sizes.observe(size)
    runs.observe(0.25)
    after = generate_latest(registry).decode()
    hist = batch_histogram(before, after)
    assert hist["buckets"] == {"1": 1, "2": 0, "4": 2, "8": 1, "+Inf": 0}
    assert hist["count"] == 4 and hist["mean"] == pytest.approx(15 / 4)
    assert busy_seconds(before, after) == pytest.approx(0.25)
    assert batch_histogram(before, "# nothing here\n") is None


def test_bench_never_imports_torch():
    code = ("import sys, bench.__main__, bench.run, bench.echo\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'onnx'))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_thread_table_compares_one_and_two_threads_and_says_which_serves(tiny_model_dir):
    from bench.ceiling import thread_rows, thread_table

    rows = thread_rows(str(tiny_model_dir), seconds=0.01, batches=(1, 8), widths=(1, 4))
    assert [(r["tokens"], r["batch"]) for r in rows] == [(1, 1), (1, 8), (4, 1), (4, 8)]
    assert all(r["same_bits"] and r["cpu_ms_1"] > 0 and r["wall_ms_2"] > 0 for r in rows)
    assert not any(r["wide"] for r in rows if r["batch"] == 1 or r["tokens"] > 1)  # small or long calls: one thread
    assert "served on" in thread_table(rows).splitlines()[0] and len(thread_table(rows).splitlines()) == 6
