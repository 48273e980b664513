"""The issue's throughput targets, judged on one run's results, each as a ratio to
something measured in the same run (the bare gRPC echo floor, the in-process
onnxruntime ceiling, the machine's cores, the victim's own quiet p50), so a
busier or faster machine moves both sides.

Each is PASS, MISS, SKIP (that configuration was not measured) or INFO, with the
measured figure and the required one. They are printed, never asserted: speed
depends on the machine. ``compare`` puts an earlier run's (``--baseline``) beside
this one's, re-judging the earlier run's raw rows with today's rules.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

ECHO_SHARE = 0.50  # 64 streams K=1: service msg/s over the echo floor's
CORE_SHARE = 0.80  # 64 streams K=1: server CPU over the machine's cores (1.6 of 2)
CEILING_SHARE = 0.80  # 64 streams K=8: service tokens/s over ORT at B=64, T=8
LONE_ORT_STEPS = 2.0  # 1 stream K=1: p50 at most the echo's p50 + this many ORT B=1 steps
NOISY_RISE_MS = 5.0  # the victim's p50 beside 4096-token loopers, over its p50 alone


def _find(rows: List[dict], streams: int, tokens: int, key: str = "streams") -> Optional[dict]:
    for row in rows:
        if row.get(key) == streams and row.get("tokens_per_message") == tokens:
            return row
    return None


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def evaluate(results: dict) -> List[dict]:
    svc, echo, ceil = results.get("service", []), results.get("echo", []), results.get("ceiling", [])
    cores = results.get("machine", {}).get("cores") or 2
    out: List[dict] = []

    def add(name: str, measured: Optional[float], required: Optional[float], ok: Optional[bool], unit: str,
            detail: str, bound: str = ">=") -> None:
        status = "SKIP" if ok is None else ("PASS" if ok else "MISS")
        out.append({"target": name, "status": status, "measured": measured, "required": required, "unit": unit,
                    "bound": bound, "detail": detail})

    s, e = _find(svc, 64, 1), _find(echo, 64, 1)
    name = f"64 streams K=1: >= {ECHO_SHARE:.0%} of the gRPC echo floor's msg/s"
    if s and e and e["msgs_per_s"] > 0:
        ratio = s["msgs_per_s"] / e["msgs_per_s"]
        add(name, ratio, ECHO_SHARE, ratio >= ECHO_SHARE, "ratio",
            f"{s['msgs_per_s']:.0f} / {e['msgs_per_s']:.0f} msg/s")
    else:
        add(name, None, ECHO_SHARE, None, "ratio", "needs streams 64, K 1")

    name = f"64 streams K=1: the server uses >= {CORE_SHARE * cores:.1f} of {cores} cores"
    if s and _ok(s.get("server_cpu")):
        add(name, s["server_cpu"], CORE_SHARE * cores, s["server_cpu"] >= CORE_SHARE * cores, "cores",
            f"server processes {s['server_cpu']:.2f} cores; whole machine {s.get('machine_cpu', float('nan')):.2f}")
    else:
        add(name, None, CORE_SHARE * cores, None, "cores", "needs streams 64, K 1 and a server the bench started")

    s8, c8 = _find(svc, 64, 8), _find(ceil, 64, 8, "batch")
    name = f"64 streams K=8: >= {CEILING_SHARE:.0%} of the onnxruntime ceiling (B=64, T=8) tokens/s"
    if s8 and c8 and c8["tokens_per_s"] > 0:
        ratio = s8["tokens_per_s"] / c8["tokens_per_s"]
        add(name, ratio, CEILING_SHARE, ratio >= CEILING_SHARE, "ratio",
            f"{s8['tokens_per_s']:.0f} / {c8['tokens_per_s']:.0f} tokens/s")
    else:
        add(name, None, CEILING_SHARE, None, "ratio", "needs streams 64, K 8")

    s1, e1, c1 = _find(svc, 1, 1), _find(echo, 1, 1), _find(ceil, 1, 1, "batch")
    name = f"1 stream K=1: p50 <= echo p50 + {LONE_ORT_STEPS:g}x the ORT B=1 step"
    if s1 and e1 and c1 and _ok(s1["latency_ms"]["p50"]):
        allowed = e1["latency_ms"]["p50"] + LONE_ORT_STEPS * c1["run_ms"]["p50"]
        p50 = s1["latency_ms"]["p50"]
        add(name, p50, allowed, p50 <= allowed, "ms",
            f"echo p50 {e1['latency_ms']['p50']:.3f} ms, ORT step {c1['run_ms']['p50']:.3f} ms"
            + (f" back to back, {c1['gap_ms']['p50']:.3f} ms after an idle gap as a lone stream's" if "gap_ms" in c1
               else ""), "<=")
    else:
        add(name, None, None, None, "ms", "needs streams 1, K 1", "<=")

    noisy = {r["neighbours"]: r for r in results.get("noisy", [])}
    for n in (1, 8):
        name = f"noisy neighbour: victim p50 rise <= {NOISY_RISE_MS:g} ms beside {n} 4096-token looper" + \
            ("s" if n > 1 else "")
        if 0 in noisy and n in noisy:
            rise = noisy[n]["p50_ms"] - noisy[0]["p50_ms"]
            add(name, rise, NOISY_RISE_MS, rise <= NOISY_RISE_MS, "ms",
                f"p50 {noisy[0]['p50_ms']:.2f} ms alone, {noisy[n]['p50_ms']:.2f} ms beside them", "<=")
        else:
            add(name, None, NOISY_RISE_MS, None, "ms", "needs the noisy-neighbour rows (not run with --no-noisy)",
                "<=")

    if s and _ok(s["latency_ms"]["p50"]):
        p50, p99 = s["latency_ms"]["p50"], s["latency_ms"]["p99"]
        add("64 streams K=1: p99 <= 3x p50", p99 / p50, 3.0, p99 <= 3 * p50, "ratio",
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", "<=")

    for r in (r for r in svc if r["streams"] == 256):
        k = r["tokens_per_message"]
        add(f"256 streams K={k}: no errors", r["error_count"], 0, r["error_count"] == 0, "errors",
            f"errors {r['errors'] or 0}", "<=")
        mid = _find(svc, 64, k)
        if mid:
            add(f"256 streams K={k}: throughput not below 64 streams", r["tokens_per_s"] / mid["tokens_per_s"], 1.0,
                r["tokens_per_s"] >= mid["tokens_per_s"], "ratio",
                f"{r['tokens_per_s']:.0f} vs {mid['tokens_per_s']:.0f} tokens/s")
        if r.get("server_rss_peak_mb") is not None:
            out.append({"target": f"256 streams K={k}: bounded memory", "status": "INFO", "measured": None,
                        "required": None, "unit": "MB",
                        "detail": f"server peak RSS {r['server_rss_peak_mb']:.0f} MB during the window"})
    return out


def figure(value: Optional[float], unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit in ("errors",):
        return f"{value:.0f}"
    return f"{value:.2f} {unit}"


def line(t: dict) -> str:
    """``PASS  name: measured X, required Y (detail)``."""
    if t.get("unit") is None or t["status"] == "INFO":
        return f"{t['status']:4}  {t['target']}: {t['detail']}"
    bound = t.get("bound", ">=")
    return (f"{t['status']:4}  {t['target']}: measured {figure(t['measured'], t['unit'])}, required {bound} "
            f"{figure(t['required'], t['unit'])} ({t['detail']})")


def compare(before: dict, after: dict) -> List[dict]:
    """Each of ``after``'s targets beside ``before``'s (its raw rows judged by today's rules)."""
    earlier: Dict[str, dict] = {t["target"]: t for t in evaluate(before)}
    rows = []
    for t in after.get("targets") or evaluate(after):
        b = earlier.get(t["target"], {"status": "SKIP", "measured": None})
        rows.append({"target": t["target"], "required": t.get("required"), "unit": t.get("unit"),
                     "before": b.get("measured"), "before_status": b["status"], "before_required": b.get("required"),
                     "after": t.get("measured"), "after_status": t["status"]})
    return rows


def compare_table(rows: List[dict], before_name: str = "before", after_name: str = "after") -> str:
    lines = [f"| target | required | {before_name} | {after_name} |", "|---|---:|---:|---:|"]
    for r in rows:
        unit = r.get("unit") or "ratio"
        own = r.get("before_required")  # a bound measured in the same run (an echo p50) differs per run
        note = f" (required {figure(own, unit)})" if own is not None and own != r["required"] else ""
        lines.append(f"| {r['target']} | {figure(r['required'], unit)} | {figure(r['before'], unit)} "
                     f"{r['before_status']}{note} | {figure(r['after'], unit)} {r['after_status']} |")
    return "\n".join(lines)
