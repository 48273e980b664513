"""The issue's throughput targets, judged on one run's results.

Each is PASS, MISS, SKIP (that configuration was not measured) or INFO.
They are printed, never asserted: speed depends on the machine.
"""
from __future__ import annotations

import math
from typing import List, Optional


def _find(rows: List[dict], streams: int, tokens: int, key: str = "streams") -> Optional[dict]:
    for row in rows:
        if row.get(key) == streams and row.get("tokens_per_message") == tokens:
            return row
    return None


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def evaluate(results: dict) -> List[dict]:
    svc, echo, ceil = results.get("service", []), results.get("echo", []), results.get("ceiling", [])
    out: List[dict] = []

    def add(name: str, ok: Optional[bool], detail: str) -> None:
        status = "SKIP" if ok is None else ("PASS" if ok else "MISS")
        out.append({"target": name, "status": status, "detail": detail})

    s, c = _find(svc, 1, 1), _find(ceil, 1, 1, "batch")
    name = "1 stream: p50 within 0.5 ms of an in-process ORT step"
    if s and c:
        gap = s["latency_ms"]["p50"] - c["run_ms"]["p50"]
        add(name, gap <= 0.5,
            f"service p50 {s['latency_ms']['p50']:.3f} ms, ORT step {c['run_ms']['p50']:.3f} ms, gap {gap:.3f} ms")
    else:
        add(name, None, "needs streams 1, K 1")

    s, e = _find(svc, 64, 1), _find(echo, 64, 1)
    name = "64 streams K=1: >= 75% of the gRPC echo floor"
    if s and e and e["msgs_per_s"] > 0:
        ratio = s["msgs_per_s"] / e["msgs_per_s"]
        add(name, ratio >= 0.75, f"{s['msgs_per_s']:.0f} / {e['msgs_per_s']:.0f} msg/s = {ratio:.0%}")
    else:
        add(name, None, "needs streams 64, K 1")
    name = "64 streams K=1: > 4000 steps/s"
    settings = results.get("settings", {})
    caveat = "" if settings.get("precision", "fp32") == "fp32" else " (the target is for the fp32 model)"
    if s:
        add(name, s["msgs_per_s"] > 4000, f"{s['msgs_per_s']:.0f} steps/s{caveat}")
    else:
        add(name, None, "needs streams 64, K 1")
    name = "64 streams K=1: p99 <= 3x p50"
    if s and _ok(s["latency_ms"]["p50"]):
        p50, p99 = s["latency_ms"]["p50"], s["latency_ms"]["p99"]
        add(name, p99 <= 3 * p50, f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({p99 / p50:.1f}x)")
    else:
        add(name, None, "needs streams 64, K 1")

    s, c = _find(svc, 64, 8), _find(ceil, 64, 8, "batch")
    name = "64 streams K=8: >= 50% of the ORT ceiling (tokens/s) at batch 64"
    if s and c:
        ratio = s["tokens_per_s"] / c["tokens_per_s"]
        add(name, ratio >= 0.5, f"{s['tokens_per_s']:.0f} / {c['tokens_per_s']:.0f} tokens/s = {ratio:.0%}")
    else:
        add(name, None, "needs streams 64, K 8")

    big = [r for r in svc if r["streams"] == 256]
    if not big:
        add("256 streams: no errors", None, "needs streams 256")
    for r in big:
        k = r["tokens_per_message"]
        add(f"256 streams K={k}: no errors", r["error_count"] == 0, f"errors {r['errors'] or 0}")
        mid = _find(svc, 64, k)
        name = f"256 streams K={k}: throughput not below 64 streams"
        if mid:
            add(name, r["tokens_per_s"] >= mid["tokens_per_s"],
                f"{r['tokens_per_s']:.0f} vs {mid['tokens_per_s']:.0f} tokens/s")
        else:
            add(name, None, f"needs streams 64, K {k}")
        if r.get("server_rss_peak_mb") is not None:
            out.append({"target": f"256 streams K={k}: bounded memory", "status": "INFO",
                        "detail": f"server peak RSS {r['server_rss_peak_mb']:.0f} MB during the window"})
    return out
