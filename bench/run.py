"""One benchmark run: ORT ceiling, then echo floor and service side by side.

For every (streams N, tokens per message K) the echo floor and the service
are measured back to back with the same client processes, so background
load on a shared machine hits both about equally. The ceiling runs first,
in this process, with no server busy.
"""
from __future__ import annotations

import time
from typing import List, Optional, Tuple

from .ceiling import load_runtime, measure
from .load import ClientPool
from .machine import facts, loadavg
from .procs import CpuMeter, EchoProcess, ServiceProcess, machine_busy_seconds
from .scrape import batch_histogram, busy_seconds, scrape
from .targets import evaluate


def describe(target: str) -> dict:
    """The served model as the service reports it (GetModel)."""
    import grpc

    from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
    from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            m = pb_grpc.LstmServiceStub(channel).GetModel(pb.GetModelRequest(), timeout=10).model
    except grpc.RpcError as exc:
        return {"error": f"GetModel failed: {exc.code().name}"}
    return {"name": m.name, "cell": m.cell, "precision": m.precision, "providers": list(m.providers),
            "layers": m.layers, "hidden_size": m.hidden_size, "vocab_size": m.vocab_size, "sha256": m.sha256[:16],
            "validation_loss": m.validation_loss}


def measure_point(pool: ClientPool, target: str, streams: int, tokens: int, warmup: float, duration: float,
                  pid: Optional[int] = None, metrics_url: Optional[str] = None) -> dict:
    meter = CpuMeter(pid) if pid else None
    marks: dict = {}

    def on_start() -> None:
        marks["scrape0"] = scrape(metrics_url)
        marks["busy0"], marks["t0"] = machine_busy_seconds(), time.monotonic()
        if meter:
            meter.start()

    def on_stop() -> None:
        if meter:
            meter.stop()
        marks["busy1"], marks["t1"] = machine_busy_seconds(), time.monotonic()
        marks["scrape1"] = scrape(metrics_url)

    row = pool.run(target, streams, tokens, warmup, duration, on_start, on_stop)
    row["machine_cpu"] = (marks["busy1"] - marks["busy0"]) / (marks["t1"] - marks["t0"])
    row["server_cpu"] = meter.cores() if meter else None
    row["server_cpu_by_process"] = meter.cores_by_process() if meter else None
    row["server_rss_peak_mb"] = meter.peak_rss_kb / 1024 if meter else None
    row["server_rss_peak_mb_by_process"] = (
        {name: kb / 1024 for name, kb in meter.peak_rss_kb_by_process.items()} if meter else None)
    # Server CPU per message: less sensitive to other load on the machine than msg/s.
    row["server_us_per_msg"] = 1e6 * row["server_cpu"] / row["msgs_per_s"] if meter and row["msgs_per_s"] else None
    row["other_cpu"] = max(0.0, row["machine_cpu"] - (row["server_cpu"] or 0.0) - row["client_cpu"])
    if metrics_url:
        row["batch_histogram"] = batch_histogram(marks["scrape0"], marks["scrape1"])
        busy = busy_seconds(marks["scrape0"], marks["scrape1"])
        row["ort_busy"] = busy / duration if busy is not None else None
    return row


def noise_note(rows: List[dict]) -> Optional[str]:
    """A warning when other processes took more than a quarter core on average during the windows."""
    other = [r["other_cpu"] for r in rows]
    if not other or sum(other) / len(other) <= 0.25:
        return None
    return (f"WARNING: other processes used {sum(other) / len(other):.2f} cores on average during the "
            "measurements; these figures are not final")


def ratios(results: dict) -> List[dict]:
    from .targets import _find

    out = []
    for s in results["service"]:
        n, k = s["streams"], s["tokens_per_message"]
        e = _find(results["echo"], n, k)
        c = _find(results["ceiling"], n, k, "batch")
        out.append({
            "streams": n, "tokens_per_message": k,
            "service_over_echo": s["msgs_per_s"] / e["msgs_per_s"] if e and e["msgs_per_s"] else None,
            "service_over_ceiling": s["tokens_per_s"] / c["tokens_per_s"] if c and c["tokens_per_s"] else None,
        })
    return out


def noisy_rows(server_args: List[str], seconds: float, log=print) -> List[dict]:
    from . import noisy

    server = ServiceProcess.start([*server_args, "--max-tokens-per-message", str(noisy.PREFILL)])
    try:
        rows = []
        for n in (0, 1, 8):
            log(f"noisy neighbour: victim beside {n} looper(s) of {noisy.PREFILL}-token prefills ...")
            rows.append(noisy.measure(server.target, n, seconds))
        return rows
    finally:
        server.stop()


def run(config, server_args: List[str], points: List[Tuple[int, int]], *, warmup: float, duration: float,
        ceiling_seconds: float, clients: int, target: Optional[str] = None, metrics_url: Optional[str] = None,
        streams_per_channel: int = 64, top_k: Optional[int] = None, parse: bool = False,
        noisy_seconds: Optional[float] = None, log=print) -> dict:
    """``config``: the service Config the server runs with (the ceiling uses the same).
    ``noisy_seconds``: also the noisy-neighbour rows (bench/noisy.py: a victim beside 0, 1 and 8
    clients looping 4096-token prefills), on a server of the same flags taking 4096-token messages."""
    results = {
        "machine": facts(),
        "settings": {"model": config.model, "precision": config.precision, "device": config.device,
                     "ort_threads": config.ort_threads, "ort_spin": config.ort_spin, "max_batch": config.max_batch,
                     "max_batch_delay_ms": config.max_batch_delay_ms, "target": target or "started by the bench",
                     "server_args": " ".join(server_args), "points": [list(p) for p in points],
                     "warmup": warmup, "duration": duration, "ceiling_seconds": ceiling_seconds,
                     "client_processes": clients, "streams_per_channel": streams_per_channel,
                     "client_parses_answers": parse,
                     "top_k": top_k if top_k is not None else "server default"},
        "server_config": config.summary() if hasattr(config, "summary") else {},
        "notes": {}, "ceiling": [], "echo": [], "service": [],
    }
    log(f"ORT ceiling ({config.model}, {config.precision}) ...")
    rt = load_runtime(config)
    results["providers"] = {"ceiling": list(rt.providers)}
    for n, k in points:
        results["ceiling"].append(measure(rt, n, k, ceiling_seconds))
    del rt
    echo = EchoProcess.start()
    server = None if target else ServiceProcess.start(server_args)
    svc_target = target or server.target
    metrics_url = metrics_url if target else server.metrics_url
    try:
        info = describe(svc_target)
        results["service_model"] = info
        results["providers"]["service"] = info.get("providers")
        with ClientPool(clients, streams_per_channel, top_k, parse) as pool:
            for n, k in points:
                log(f"streams {n}, {k} token(s)/message: echo floor ...")
                results["echo"].append(measure_point(pool, echo.target, n, k, warmup, duration, echo.pid))
                log(f"streams {n}, {k} token(s)/message: service ...")
                results["service"].append(measure_point(pool, svc_target, n, k, warmup, duration,
                                                        server.pid if server else None, metrics_url))
        if server:
            results["server_peak_rss_mb_lifetime"] = server.peak_rss_kb() / 1024
    finally:
        echo.stop()
        if server and server.stop() not in (0, None):
            results["notes"]["server_exit"] = f"server exited with {server.proc.returncode}: {server.log_tail(10)}"
    if noisy_seconds and not target:
        results["noisy"] = noisy_rows(server_args, noisy_seconds, log)
    results["machine"]["loadavg_at_end"] = loadavg()
    if not any(r.get("batch_histogram") for r in results["service"]):
        results["notes"]["batch_histogram"] = (
            "no batch-size histogram: " + ("give --metrics-url for a --target server" if target
                                           else "the service's /metrics has no histogram named *batch*"))
    if target:
        results["notes"]["server_cpu"] = ("external --target: server CPU and memory are not measured "
                                          "(other CPU includes the server)")
    elif noise := noise_note(results["echo"] + results["service"]):
        results["notes"]["noise"] = noise
    results["notes"]["client"] = (
        "requests are serialized once up front; " + ("every answer is parsed" if parse else
                                                     "answers are kept as bytes (the first of each stream is parsed "
                                                     "and checked), leaving the most CPU to the server"))
    results["ratios"] = ratios(results)
    results["targets"] = evaluate(results)
    return results
