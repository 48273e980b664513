"""`make latency` (service/latency_probe.py, a dev tool): a short run on the tiny model prints and
writes both figures, the gRPC step and the in-process step, from the same steps."""
from __future__ import annotations

import json

from tools import latency_probe


def test_a_short_probe_writes_both_figures(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "latency.json"
    assert latency_probe.main(["--model", str(tiny_model_dir), "--steps", "30", "--warmup", "3",
                               "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for part in ("grpc_stream", "ort_in_process"):
        assert 0 < figures[part]["p50_ms"] <= figures[part]["p90_ms"] <= figures[part]["p99_ms"]
    assert figures["p50_overhead_ms"] == figures["grpc_stream"]["p50_ms"] - figures["ort_in_process"]["p50_ms"]
    assert "p50 overhead of the service" in capsys.readouterr().out
