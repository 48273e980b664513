"""``python -m bench --kserve --quick``: perf_analyzer (Triton's own load generator)
drives the KServe v2 endpoint of a real server subprocess with streaming sequences,
next to lstm.v1; every request succeeds. No timing assertions: the figures only
have to exist. Skipped where perf_analyzer is not installed (`make perf-analyzer`)."""
from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.kserve import find_perf_analyzer

ROOT = Path(__file__).resolve().parents[2]


def test_perf_analyzer_runs_streaming_sequences_beside_lstm_v1(tiny_model_dir, tmp_path):
    try:
        find_perf_analyzer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    if ctypes.util.find_library("b64") is None:
        pytest.skip("perf_analyzer needs Debian's libb64-0d (make system-deps installs it as root)")
    argv = [sys.executable, "-m", "bench", "--kserve", "--quick", "--sequence-length", "6",
            "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(tmp_path)]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = json.loads((tmp_path / "kserve" / "results.json").read_text())
    assert [r["streams"] for r in results["rows"]] == [1, 4]
    for row in results["rows"]:
        pa, v1 = row["kserve"], row["lstm_v1"]
        assert "error" not in pa and pa["infer_per_s"] > 0 and pa["latency_ms"]["p50"] > 0
        assert "--streaming" in pa["command"] and "--sequence-length 6" in pa["command"]
        assert v1["msgs_per_s"] > 0 and v1["error_count"] == 0
    assert "| 4 |" in (tmp_path / "kserve" / "results.md").read_text()
