"""``python -m bench --handoff`` end to end on the tiny model: a real redis-server, real
replicas, every call answered. No timing assertions: both rows are there with every call
counted, and the takeover after kill -9 was measured."""
from __future__ import annotations

import json
import shutil

import pytest


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_handoff_run(run_bench, tiny_model_dir, tmp_path):
    stdout = run_bench("--handoff", "--model", str(tiny_model_dir), "--device", "cpu", "--rounds", "2",
                       "--out", str(tmp_path))
    assert "handoff (session alternates replicas)" in stdout and "takeover after kill -9" in stdout
    result = json.loads((tmp_path / "handoff.json").read_text())
    assert result["plain"]["calls"] == result["handoff"]["calls"] == 20
    assert result["handoff"]["p50"] > 0 and result["takeover_ms"] > 0
