"""The server's batch-size histogram, from its Prometheus ``/metrics`` endpoint.

    before = scrape(url); ...load...; after = scrape(url)
    batch_histogram(before, after)   # {"metric", "buckets": {le: count}, "count", "mean"} or None

The service is started with ``--metrics-port``; the histogram is the one
whose name mentions batch size (summed over its labels). Scraping before
and after the measured window and subtracting gives the batches of that
window alone.
"""
from __future__ import annotations

import urllib.request
from typing import Dict, Optional, Tuple

Hist = Dict[str, Dict]


def scrape(url: Optional[str], timeout: float = 2.0) -> Optional[str]:
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.read().decode()
    except OSError:
        return None


def histograms(text: str) -> Hist:
    """name -> {"buckets": {le: cumulative count}, "sum": x, "count": n}, summed over label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Hist = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        h = out.setdefault(family.name, {"buckets": {}, "sum": 0.0, "count": 0.0})
        for s in family.samples:
            if s.name.endswith("_bucket"):
                le = s.labels["le"]
                h["buckets"][le] = h["buckets"].get(le, 0.0) + s.value
            elif s.name.endswith("_sum"):
                h["sum"] += s.value
            elif s.name.endswith("_count"):
                h["count"] += s.value
    return out


def _pick(hists: Hist) -> Optional[str]:
    names = [n for n in hists if "batch" in n.lower()]
    sized = [n for n in names if "size" in n.lower()]
    return (sized or names or [None])[0]


def _le_key(le: str) -> Tuple[float, str]:
    return (float("inf") if le in ("+Inf", "Inf") else float(le), le)


def _delta(before: Optional[str], after: str, name: str) -> dict:
    new = histograms(after)[name]
    old = (histograms(before).get(name) if before else None) or {"buckets": {}, "sum": 0.0, "count": 0.0}
    buckets = {le: new["buckets"][le] - old["buckets"].get(le, 0.0) for le in new["buckets"]}
    return {"buckets": buckets, "sum": new["sum"] - old["sum"], "count": new["count"] - old["count"]}


def batch_histogram(before: Optional[str], after: Optional[str]) -> Optional[dict]:
    """Batches run between two scrapes, by batch-size bucket (not cumulative)."""
    name = _pick(histograms(after)) if after else None
    if name is None:
        return None
    d = _delta(before, after, name)
    previous, buckets = 0.0, {}
    for le in sorted(d["buckets"], key=_le_key):
        label = le if le in ("+Inf", "Inf") else f"{float(le):g}"
        buckets[label] = int(round(d["buckets"][le] - previous))
        previous = d["buckets"][le]
    return {"metric": name, "buckets": buckets, "count": int(d["count"]),
            "mean": d["sum"] / d["count"] if d["count"] else float("nan")}


def busy_seconds(before: Optional[str], after: Optional[str], words=("ort", "seconds")) -> Optional[float]:
    """Seconds the server spent inside onnxruntime between two scrapes (sum of its run-time histogram)."""
    if after is None:
        return None
    names = [n for n in histograms(after) if all(w in n.lower() for w in words)]
    return _delta(before, after, names[0])["sum"] if names else None
