"""The benchmark's outputs: a Markdown table on stdout, results.json,
results.md and a PNG plot (throughput and p99 vs streams)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional

from .ceiling import LONE_GAP_S
from .targets import _find, line
from .targets import compare_table as targets_table


def _f(x, fmt: str = "{:.0f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def _md(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main_table(results: dict) -> str:
    header = ["streams", "tok/msg", "service msg/s", "service tok/s", "p50 ms", "p90 ms", "p99 ms", "errors",
              "echo msg/s", "echo p50 ms", "ORT tok/s", "svc/echo", "svc/ORT", "mean batch",
              "server CPU", "svc CPU µs/msg", "echo CPU µs/msg", "client CPU", "other CPU", "server RSS MB"]
    ratios = {(r["streams"], r["tokens_per_message"]): r for r in results.get("ratios", [])}
    rows = []
    for s in results.get("service", []):
        n, k = s["streams"], s["tokens_per_message"]
        e = _find(results.get("echo", []), n, k) or {}
        c = _find(results.get("ceiling", []), n, k, "batch") or {}
        r = ratios.get((n, k), {})
        lat, elat = s["latency_ms"], e.get("latency_ms", {})
        hist = s.get("batch_histogram") or {}
        rows.append([
            str(n), str(k), _f(s["msgs_per_s"]), _f(s["tokens_per_s"]), _f(lat["p50"], "{:.2f}"),
            _f(lat["p90"], "{:.2f}"), _f(lat["p99"], "{:.2f}"), str(s["error_count"]),
            _f(e.get("msgs_per_s")), _f(elat.get("p50"), "{:.2f}"), _f(c.get("tokens_per_s")),
            _f(r.get("service_over_echo"), "{:.0%}"), _f(r.get("service_over_ceiling"), "{:.0%}"),
            _f(hist.get("mean"), "{:.1f}"), _f(s.get("server_cpu"), "{:.2f}"), _f(s.get("server_us_per_msg")),
            _f(e.get("server_us_per_msg")), _f(s.get("client_cpu"), "{:.2f}"),
            _f(s.get("other_cpu"), "{:.2f}"), _f(s.get("server_rss_peak_mb")),
        ])
    return _md(header, rows)


def ceiling_table(results: dict) -> str:
    """At B=1 also the one-row call as is, beside the call the server makes (bench/ceiling.py)."""
    rows = [[str(c["batch"]), str(c["tokens_per_message"]), _f(c["run_ms"]["p50"], "{:.3f}"),
             _f(c.get("row_ms", {}).get("p50"), "{:.3f}"), _f(c.get("gap_ms", {}).get("p50"), "{:.3f}"),
             _f(c.get("lone_copies")), _f(c["steps_per_s"]), _f(c["tokens_per_s"])]
            for c in results.get("ceiling", [])]
    return _md(["batch B", "tokens T", "run p50 ms (as served)", "one row as is p50 ms",
                f"after a {LONE_GAP_S * 1000:g} ms idle gap p50 ms", "a lone row runs as copies",
                "sequences/s", "tokens/s"], rows)


def compare_table(runs: List[dict]) -> str:
    """One line per run (e.g. fp32 and int8): the headline figures side by side."""
    header = ["precision", "val loss", "msg/s by streams (K=1)", "tok/s by streams (K=8)", "1-stream p50 ms",
              "svc/echo @64 K=1", "svc/ORT @64 K=8"]
    rows = []
    for r in runs:
        svc = r.get("service", [])
        ratio = {(x["streams"], x["tokens_per_message"]): x for x in r.get("ratios", [])}
        one = _find(svc, 1, 1)

        def by(k: int, key: str, svc=svc) -> str:
            return ", ".join(f"{x['streams']}: {x[key]:.0f}" for x in svc if x["tokens_per_message"] == k)

        rows.append([r["settings"]["precision"], _f(r.get("service_model", {}).get("validation_loss"), "{:.3f}"),
                     by(1, "msgs_per_s") or "-", by(8, "tokens_per_s") or "-",
                     _f(one["latency_ms"]["p50"] if one else None, "{:.2f}"),
                     _f(ratio.get((64, 1), {}).get("service_over_echo"), "{:.0%}"),
                     _f(ratio.get((64, 8), {}).get("service_over_ceiling"), "{:.0%}")])
    return _md(header, rows)


def histogram_lines(results: dict) -> List[str]:
    lines = []
    for s in results.get("service", []):
        h = s.get("batch_histogram")
        if h is None:
            continue
        buckets = ", ".join(f"<={le}: {n}" for le, n in h["buckets"].items() if n)
        busy = s.get("ort_busy")
        extra = f"; ORT busy {busy:.0%} of the window" if busy is not None else ""
        plural = "" if s["streams"] == 1 else "s"
        lines.append(f"- {s['streams']} stream{plural}, K={s['tokens_per_message']}: {h['count']} batches, "
                     f"mean {_f(h['mean'], '{:.1f}')} ({buckets}){extra}")
    return lines or ["- not available: " + results.get("notes", {}).get("batch_histogram", "no metrics endpoint")]


def target_lines(results: dict) -> List[str]:
    return [line(t) for t in results.get("targets", [])]


def noisy_lines(results: dict) -> List[str]:
    rows = results.get("noisy") or []
    if not rows:
        return []
    out = ["Noisy neighbour (a victim's 1-token Predicts beside clients looping 4096-token prefills):", "",
           "| neighbours | victim steps | victim p50 ms | victim p99 ms |", "|---:|---:|---:|---:|"]
    out += [f"| {r['neighbours']} | {r['steps']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |" for r in rows]
    return out + [""]


def baseline_lines(results: dict) -> List[str]:
    b = results.get("baseline")
    if not b:
        return []
    return ["", f"Targets before ({b['name']}) and after (this run):", "",
            targets_table(b["rows"], "before", "after")]


def summary(results: dict) -> str:
    """What is printed to stdout: the main table, the ceiling and the targets."""
    st = results["settings"]
    m = results["machine"]
    loss = results.get("service_model", {}).get("validation_loss")
    head = (f"model {st['model']} ({st['precision']}, validation loss {_f(loss, '{:.3f}')} nats/byte), "
            f"device {st['device']}, providers {', '.join(results.get('providers', {}).get('service') or ['?'])}; "
            f"{m['cpu']}, {m['cores']} cores; {st['duration']} s per point after {st['warmup']} s warm-up")
    noise = results.get("notes", {}).get("noise")
    parts = [head, *([noise] if noise else []), "", main_table(results), "", "In-process onnxruntime ceiling:", "",
             ceiling_table(results), "", "Server batch sizes:", *histogram_lines(results), "",
             *noisy_lines(results), "Targets:", *target_lines(results), *baseline_lines(results)]
    return "\n".join(parts)


def markdown(results: dict) -> str:
    m, st = results["machine"], results["settings"]
    facts = [f"- {k}: {v}" for k, v in m.items()]
    providers = results.get("providers", {})
    facts.append(f"- providers used: service {providers.get('service')}, ORT ceiling {providers.get('ceiling')}")
    settings = [f"- {k}: {v}" for k, v in st.items()]
    skip = ("host", "port", "metrics_port", "grace", "log_level", "log_format")  # set by the bench itself
    server = {k: v for k, v in (results.get("server_config") or {}).items() if k not in skip}
    settings.append("- server config: " + ", ".join(f"{k}={v}" for k, v in server.items()))
    notes = [f"- {k}: {v}" for k, v in results.get("notes", {}).items()]
    return "\n".join([
        "# Benchmark: lstm.v1 service", "", "## Machine", "", *facts, "", "## Settings", "", *settings, "",
        "## Service vs echo floor vs onnxruntime ceiling", "",
        "msg/s = Stream messages answered per second (each carries `tok/msg` tokens); latency per message; "
        "CPU in cores (CPU-seconds per wall second) during the window; other CPU = everything else on the machine; "
        "CPU µs/msg = server CPU time per message (steadier than msg/s when the machine is shared).",
        "", main_table(results), "", "## In-process onnxruntime ceiling", "", ceiling_table(results), "",
        "## Server batch sizes", "", *histogram_lines(results), "", *noisy_lines(results), "## Targets", "", "```",
        *target_lines(results), "```", *baseline_lines(results), "", "## Notes", "", *notes, "",
    ])


def plot(results: dict, path: Path) -> Optional[str]:
    """Write the PNG; returns a message instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[bench]'): no plot"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = ["-", "--", ":", "-."]
    sources = (("service", results["service"], "streams", "o", "tab:blue"),
               ("echo floor", results.get("echo", []), "streams", "s", "tab:orange"),
               ("ORT ceiling", results.get("ceiling", []), "batch", "^", "tab:green"))
    for i, k in enumerate(sorted({r["tokens_per_message"] for r in results.get("service", [])})):
        style = styles[i % len(styles)]
        for name, rows, key, marker, color in sources:
            pts = sorted((r[key], r["tokens_per_s"]) for r in rows if r["tokens_per_message"] == k)
            if pts:
                ax1.plot(*zip(*pts), style, marker=marker, color=color, label=f"{name}, K={k}")
            if name != "ORT ceiling":
                lat = sorted((r[key], r["latency_ms"]["p99"]) for r in rows if r["tokens_per_message"] == k)
                if lat:
                    ax2.plot(*zip(*lat), style, marker=marker, color=color, label=f"{name}, K={k}")
    ticks = sorted({r["streams"] for r in results.get("service", [])})
    for ax, label in ((ax1, "tokens/s (K=1: steps/s)"), (ax2, "p99 latency per message, ms")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("concurrent streams (ORT: batch size)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    st, m = results["settings"], results["machine"]
    fig.suptitle(f"{Path(st['model']).name} {st['precision']} on {m['cpu']} ({m['cores']} cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _clean(x):
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write(results: dict, out: Path) -> List[str]:
    """results.json, results.md, throughput.png under ``out``; the messages to show."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_clean(results), indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    messages = [f"wrote {out / 'results.json'} and {out / 'results.md'}"]
    why_not = plot(results, out / "throughput.png")
    messages.append(why_not or f"wrote {out / 'throughput.png'}")
    return messages


def write_mode(out: Path, name: str, text: str, payload: dict, machine: dict) -> None:
    """One extra bench mode's results: <name>.md (the printed table) and <name>.json (the
    payload, with the machine's facts and its load average at the end)."""
    from .machine import loadavg

    machine["loadavg_at_end"] = loadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"machine": machine, **payload}, indent=1, default=str))
    (out / f"{name}.md").write_text(text + "\n")
    print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")

