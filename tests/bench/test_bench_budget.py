"""``python -m bench --budget`` end to end in --quick mode against the tiny model: real servers
in both modes (--fronts 0 and one front + engine) with their cost timers on, a real echo server,
real clients. No timing assertions: the parts have to be there and add up."""
from __future__ import annotations

import json

import pytest

from bench.budget import BEGIN, END, Window, rows, write_docs


@pytest.fixture(scope="module")
def budget_run(run_bench, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    doc = out / "performance.md"
    doc.write_text(f"# Performance\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    stdout = run_bench("--budget", "--quick", "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(out),
                       "--write-docs", str(doc))
    return stdout, json.loads((out / "budget.json").read_text()), doc


def test_every_mode_and_stream_count_is_timed(budget_run):
    _, results, _ = budget_run
    names = [p["name"] for p in results["points"]]
    assert names == ["--fronts 0, 1 stream", "--fronts 0, 64 streams", "default, 1 stream", "default, 64 streams"]
    for point in results["points"]:
        roles = sorted(p["role"] for p in point["procs"])
        assert roles == (["single"] if point["name"].startswith("--fronts 0") else ["engine", "front"]), roles
        w = Window(point["procs"], point["client"])
        assert w.messages > 0 and point["client"]["error_count"] == 0
        # Never more model calls than messages; the server's window (two SIGUSR2 dumps) and the
        # client's count of messages start and end a few steps apart, hence the 2% slack.
        assert w.events(w.engine, "ort.run") <= 1.02
        assert point["echo"]["msgs_per_s"] > 0


def test_parts_are_positive_and_account_for_the_server_cpu(budget_run):
    _, results, _ = budget_run
    for point in results["points"]:
        w = Window(point["procs"], point["client"])
        figures = {label: (cpu, wall) for label, cpu, wall in rows(w)}
        assert figures["onnxruntime run"][0] > 0 and figures["onnxruntime run"][1] > 0
        assert figures["encode reply (protobuf StepResult)"][0] > 0
        total = figures.pop("**server total** (CPU: all its processes; wall: client mean latency)")[0]
        parts = sum(cpu for cpu, _ in figures.values() if cpu is not None)
        assert parts == pytest.approx(total)  # the untimed rows are the remainder, so the CPU adds up
        linked = not point["name"].startswith("--fronts 0")
        link = figures["engine → front: encode, pack, write (engine)"][0]
        assert (link is not None and link > 0) if linked else link is None


def test_table_is_printed_and_written_into_the_doc(budget_run):
    stdout, _, doc = budget_run
    assert "| part (µs per message) |" in stdout and "onnxruntime run" in stdout
    text = doc.read_text()
    assert "old table" not in text and "onnxruntime run" in text
    assert text.startswith("# Performance\n") and text.endswith("after\n")


def test_write_docs_needs_the_markers(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        write_docs(doc, "table")


def _proc(role, cpu_ns, **parts):
    return {"pid": 1, "role": role, "cpu_ns": cpu_ns, "wall_ns": 10**9,
            "parts": {name: {"events": n, "msgs": n, "wall_ns": wall, "cpu_ns": cpu}
                      for name, (n, cpu, wall) in parts.items()}}


def test_kserve_extra_names_the_parts_that_cost_more_than_lstm_v1():
    from bench.budget import kserve_extra

    client = {"latency_ms": {"mean": 1.0}}
    v1 = {"name": "--fronts 0, 1 stream", "client": client,
          "procs": [_proc("single", 100_000_000, **{"edge.check": (1000, 5_000_000, 5_000_000),
                                                     "edge.residence": (1000, 0, 10**8)})]}
    ks = {"name": "KServe --fronts 0, 1 stream", "client": client, "kserve": True,
          "procs": [_proc("single", 150_000_000, **{"kserve.check": (1000, 25_000_000, 25_000_000)})]}
    (line,) = kserve_extra([v1], [ks])
    # 150 vs 100 µs per step; checks 25 vs 5; untimed 125 vs 95
    assert line.startswith("- KServe --fronts 0, 1 stream: +50 µs CPU per step over lstm.v1 (150 vs 100)")
    assert "untimed, single process or front +30" in line and "request checks +20" in line
