"""``python -m bench --snapshots`` end to end on the tiny model: a real
redis-server, three real service processes (memory only, default, write-through), real client processes. No timing
assertions: both rows must exist, every message answered, and the store-on
server must really have written snapshots, the write-through one more often."""
from __future__ import annotations

import json
import shutil

import pytest


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_snapshot_cost_run(run_bench, tiny_model_dir, tmp_path):
    stdout = run_bench("--snapshots", "--model", str(tiny_model_dir), "--device", "cpu", "--streams", "4",
                       "--duration", "1", "--warmup", "0.3", "--clients", "1", "--server-args", "--snapshot-every 4",
                       "--out", str(tmp_path))
    assert "store off steps/s" in stdout
    rows = json.loads((tmp_path / "snapshots.json").read_text())["rows"]
    assert [(r["streams"], r["order"]) for r in rows] == [(4, "off, on, through"), (4, "through, on, off")]
    for r in rows:
        for side in ("off", "on", "through"):
            assert r[side]["msgs_per_s"] > 0 and r[side]["error_count"] == 0, r[side]["errors"]
        assert r["snapshots_per_s"] > 0  # the store-on server wrote to Redis; the other had no store
        # write-through writes every step (each 1-token message), so at least as often as every 4th
        assert r["through_snapshots_per_s"] > r["snapshots_per_s"]
    assert (tmp_path / "snapshots.md").read_text().startswith("| streams |")
