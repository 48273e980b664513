"""``python -m bench --kserve``: Triton's perf_analyzer against the service's KServe v2
endpoint, beside lstm.v1 driven by this bench's own client, in the same run.

    python -m bench --kserve --model models/shakespeare --streams 1,16,64 --sequence-length 64

One server process serves both protocols. For every N in --streams, back to
back (so background load hits both alike):
  lstm.v1   N Stream sessions, a closed loop of 1-token steps (bench/load.py)
  KServe    perf_analyzer --streaming --serial-sequences --concurrency-range N:N
            --sequence-length L: N sequences at a time, one 1-token request
            outstanding per sequence, each sequence L steps (start ... end)
so both keep N one-token steps in flight. perf_analyzer comes from the
tritonclient 2.51.0 wheel (`make perf-analyzer`: the newest whose binary runs
on Debian 12's glibc), needs Debian's libb64-0d and, even on CPU, libcudart
from nvidia-cuda-runtime-cu12 on LD_LIBRARY_PATH; this module finds both.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional

from .load import TEXT

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = ROOT / ".venv" / "perf-analyzer" / "bin" / "perf_analyzer"
INSTALL_HINT = ("perf_analyzer not found: run `make perf-analyzer` (tritonclient 2.51.0 wheel + "
                "nvidia-cuda-runtime-cu12 into .venv/perf-analyzer, Debian libb64-0d), or give --perf-analyzer PATH")


def find_perf_analyzer(given: Optional[str] = None) -> Path:
    for candidate in (given, os.environ.get("PERF_ANALYZER"), DEFAULT_BINARY, shutil.which("perf_analyzer")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise FileNotFoundError(given and f"--perf-analyzer {given}: no executable there" or INSTALL_HINT)


def cuda_runtime_dirs(binary: Path) -> List[str]:
    """Folders holding libcudart.so.12 (nvidia-cuda-runtime-cu12), beside the binary's
    install prefix or on sys.path; perf_analyzer loads it even when it never uses CUDA."""
    import sys

    roots = [binary.parent.parent, *map(Path, filter(None, sys.path))]
    return [str(d) for d in (r / "nvidia" / "cuda_runtime" / "lib" for r in roots) if (d / "libcudart.so.12").exists()]


def input_data(path: Path, length: int) -> Path:
    """One perf_analyzer data stream of ``length`` one-token steps (INPUT_IDS [1,1]) from the bench text."""
    steps = [{"INPUT_IDS": {"content": [int(TEXT[i % len(TEXT)])], "shape": [1, 1]}} for i in range(length)]
    path.write_text(json.dumps({"data": [steps]}))
    return path


def perf_analyzer_point(binary: Path, target: str, model: str, streams: int, length: int, window_ms: int,
                        data: Path, workdir: Path, extra: List[str]) -> dict:
    """One perf_analyzer run at concurrency ``streams``; its CSV row as numbers (latencies in ms)."""
    out_csv = workdir / f"pa-{streams}.csv"
    argv = [str(binary), "-m", model, "-u", target, "-i", "grpc", "--streaming", "--serial-sequences",
            "--sequence-length", str(length), "--sequence-length-variation", "0",
            "--concurrency-range", f"{streams}:{streams}", "--input-data", str(data),
            "--measurement-interval", str(window_ms), "--stability-percentage", "25", "--max-trials", "10",
            "-f", str(out_csv), *extra]
    env = dict(os.environ)
    library_path = [*cuda_runtime_dirs(binary), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path).strip(os.pathsep)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60 + 12 * window_ms / 1000)
    row = {"streams": streams, "command": " ".join(argv[1:]), "exit_code": proc.returncode}
    if proc.returncode != 0 or not out_csv.exists():
        row["error"] = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        return row
    with out_csv.open() as f:
        (values,) = list(csv.DictReader(f))
    row.update({
        "infer_per_s": float(values["Inferences/Second"]),
        "latency_ms": {p: float(values[f"{p} latency"]) / 1000 for p in ("p50", "p90", "p99")},
        "server_compute_ms": float(values["Server Compute Infer"]) / 1000,
    })
    return row


def measure_kserve(binary: Path, target: str, model: str, streams: int, length: int, duration: float, data: Path,
                   workdir: Path, fixed_count: int, stabilize: bool = True) -> dict:
    """perf_analyzer's own stabilization (3 windows within 25%), up to 10 windows. On a shared
    machine that may never settle: then (and in --quick mode) one measurement of a fixed
    number of requests, as many as lstm.v1 answered in its window, marked unstabilized."""
    window_ms = int(duration * 1000)
    if stabilize:
        row = perf_analyzer_point(binary, target, model, streams, length, window_ms, data, workdir, [])
        if "error" not in row or not any("stable" in line for line in row["error"]):
            row["stabilized"] = "error" not in row
            return row
    row = perf_analyzer_point(binary, target, model, streams, length, window_ms, data, workdir,
                              ["--request-count", str(fixed_count)])
    row["stabilized"] = False
    return row


def run(config, server_args: List[str], streams: List[int], *, length: int, warmup: float, duration: float,
        clients: int, binary: Path, quick: bool = False, log=print) -> dict:
    from .machine import facts, loadavg
    from .load import ClientPool
    from .procs import CpuMeter, ServiceProcess
    from .run import describe, measure_point

    results = {"machine": facts(), "settings": {
        "model": config.model, "precision": config.precision, "device": config.device, "streams": streams,
        "sequence_length": length, "duration": duration, "warmup": warmup, "server_args": " ".join(server_args),
        "perf_analyzer": str(binary)}, "rows": [], "notes": {}}
    from lstm_service.model.card import load_card

    model_name = load_card(Path(config.model)).name
    server = ServiceProcess.start(server_args)
    try:
        info = describe(server.target)
        results["service_model"] = info
        with tempfile.TemporaryDirectory() as tmp, ClientPool(clients) as pool:
            data = input_data(Path(tmp) / "input.json", length)
            for n in streams:
                log(f"{n} stream(s): lstm.v1 ...")
                v1 = measure_point(pool, server.target, n, 1, warmup, duration, server.pid, server.metrics_url)
                log(f"{n} sequence(s): KServe v2 via perf_analyzer ...")
                meter = CpuMeter(server.pid).start()  # over all of perf_analyzer's windows: an average
                pa = measure_kserve(binary, server.target, model_name, n, length, duration, data, Path(tmp),
                                    fixed_count=max(100, int(v1["messages"])), stabilize=not quick)
                pa["server_cpu"] = meter.stop().cores()
                if pa.get("infer_per_s"):
                    pa["server_us_per_infer"] = 1e6 * pa["server_cpu"] / pa["infer_per_s"]
                results["rows"].append({"streams": n, "lstm_v1": v1, "kserve": pa})
    finally:
        if server.stop() not in (0, None):
            results["notes"]["server_exit"] = f"server exited with {server.proc.returncode}: {server.log_tail(10)}"
    results["machine"]["loadavg_at_end"] = loadavg()
    return results


def table(results: dict) -> str:
    def f(x, fmt="{:.0f}"):
        return "-" if x is None else fmt.format(x)

    lines = ["| streams / sequences | lstm.v1 msg/s | lstm.v1 p50 ms | lstm.v1 p99 ms "
             "| KServe infer/s (perf_analyzer) | KServe p50 ms | KServe p99 ms | KServe / lstm.v1 "
             "| server CPU us/msg lstm.v1 | server CPU us/infer KServe |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        v1, pa = r["lstm_v1"], r["kserve"]
        pl, vl = pa.get("latency_ms", {}), v1["latency_ms"]
        ratio = pa["infer_per_s"] / v1["msgs_per_s"] if pa.get("infer_per_s") and v1["msgs_per_s"] else None
        mark = "" if pa.get("stabilized", True) else "*"
        lines.append(f"| {r['streams']} | {f(v1['msgs_per_s'])} | {f(vl['p50'], '{:.2f}')} | {f(vl['p99'], '{:.2f}')} "
                     f"| {f(pa.get('infer_per_s'))}{mark} | {f(pl.get('p50'), '{:.2f}')} "
                     f"| {f(pl.get('p99'), '{:.2f}')} | {f(ratio, '{:.2f}')} | {f(v1.get('server_us_per_msg'))} "
                     f"| {f(pa.get('server_us_per_infer'))} |")
    failed = [f"perf_analyzer at {r['streams']}: {' / '.join(r['kserve']['error'])}"
              for r in results["rows"] if "error" in r["kserve"]]
    if any(not r["kserve"].get("stabilized", True) for r in results["rows"]):
        failed.append("\n\\* perf_analyzer did not stabilise (3 windows within 25%); "
                      "one fixed-count measurement instead.")
    return "\n".join(lines + failed)


def write(results: dict, out: Path) -> List[str]:
    out.mkdir(parents=True, exist_ok=True)
    m, s = results["machine"], results["settings"]
    head = (f"# KServe v2 (perf_analyzer) beside lstm.v1, one server, same run\n\n"
            f"Model {s['model']} ({s['precision']}, {s['device']}); machine: {m.get('cpu')}, {m.get('cores')} cores; "
            f"one-token steps; KServe sequences of {s['sequence_length']} steps; {s['duration']:g} s per point; "
            f"load average at the end {m.get('loadavg_at_end')}.\n\n"
            "lstm.v1 is driven by this bench's Python client (bench/load.py: N streams, closed loop), KServe v2 by "
            "perf_analyzer (C++: --streaming --serial-sequences, N sequences); on a small machine each client's "
            "CPU competes with the server's, so server CPU per message is the steadier comparison.\n\n")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "results.md").write_text(head + table(results) + "\n")
    return [f"wrote {out / 'results.json'}", f"wrote {out / 'results.md'}"]


def main(args, parser, precisions: List[str]) -> int:
    """The --kserve branch of ``python -m bench`` (one precision; results in --out/kserve)."""
    import shlex
    import sys

    from lstm_service.service.proc.config import load_config
    from lstm_service.service.api.errors import ConfigError

    if len(precisions) != 1 or args.target:
        parser.error("--kserve runs one --precision against a server it starts (no --target)")
    try:
        binary = find_perf_analyzer(args.perf_analyzer)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    from .__main__ import _ints

    try:
        streams = _ints(args.streams or ("1,4" if args.quick else "1,16,64"))
    except Exception as exc:  # argparse.ArgumentTypeError, with the message
        parser.error(f"--streams: {exc}")
    duration = args.duration or (1.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 2.0)
    server_args = ["--model", args.model, "--precision", precisions[0], "--device", args.device,
                   *shlex.split(args.server_args)]
    try:
        config = load_config(server_args)
    except (ConfigError, SystemExit) as exc:
        parser.error(f"--server-args: {exc}")
    results = run(config, server_args, streams, length=args.sequence_length, warmup=warmup, duration=duration,
                  clients=args.clients, binary=binary, quick=args.quick,
                  log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(table(results), flush=True)
    for message in write(results, Path(args.out) / "kserve"):
        print(message, file=sys.stderr)
    return 1 if any("error" in r["kserve"] for r in results["rows"]) else 0
