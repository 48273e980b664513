"""``python -m bench --budget``: where one message's time goes, part by part.

    python -m bench --budget --model models/shakespeare                    # ~1 min: 2 modes x 1, 64 streams
    python -m bench --budget --model M --kserve-budget                     # + KServe v2 rows (perf_analyzer)
    python -m bench --budget --model M --write-docs docs/performance.md    # regenerate the doc's table

For each server mode (``--fronts 0`` and the default, one front + engine) and each of
1 and 64 streams of K=1 steps, a server is started with ``LSTM_BUDGET=<dir>``: its
in-process timers (service/proc/budget.py) run, and SIGUSR2 makes every server
process dump its totals. The bench signals at both edges of the measurement window
and takes the difference, so only the window counts. Each part is CPU µs and wall µs
per message answered in the window: CPU of the thread that did it (summed over the
messages, divided by their count: a batch-level part's CPU is shared by the batch),
wall as each message experienced it (a batch-level part counts once for every message
in the batch). What no timer covers (grpc's C core and its Python glue: receiving,
decoding, encoding and sending the messages; the event loop; the session holds) is
the process's CPU less its timed parts. The bare gRPC echo floor, with the same
client, is measured beside it for comparison.
"""
from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .machine import facts, loadavg
from .report import _md

MODES: Tuple[Tuple[str, List[str]], ...] = (("--fronts 0", ["--fronts", "0"]), ("default", []))
STREAMS = (1, 64)
BEGIN, END = "<!-- budget:begin -->", "<!-- budget:end -->"


# -- the server's dumps -----------------------------------------------------------------------
def ready_pids(directory: Path) -> Dict[int, str]:
    """Server processes that dump on SIGUSR2 (their role), from their ``<pid>.ready`` files."""
    out = {}
    for path in directory.glob("*.ready"):
        pid = int(path.stem)
        try:
            os.kill(pid, 0)
        except OSError:
            continue
        out[pid] = path.read_text()
    return out


def _latest(directory: Path, pid: int) -> Tuple[int, Optional[Path]]:
    dumps = [(int(p.stem.split("-")[1]), p) for p in directory.glob(f"{pid}-*.json")]
    return max(dumps) if dumps else (0, None)


def snapshot(directory: Path, timeout: float = 5.0) -> Dict[int, dict]:
    """Signal every ready process and read the dump each writes back."""
    pids = ready_pids(directory)
    before = {pid: _latest(directory, pid)[0] for pid in pids}
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    out: Dict[int, dict] = {}
    give_up = time.monotonic() + timeout
    while len(out) < len(pids) and time.monotonic() < give_up:
        for pid in pids:
            n, path = _latest(directory, pid)
            if pid not in out and path is not None and n > before[pid]:
                out[pid] = json.loads(path.read_text())
        time.sleep(0.01)
    missing = set(pids) - set(out)
    if missing:
        raise RuntimeError(f"server processes {sorted(missing)} did not dump their cost timers within {timeout} s")
    return out


def difference(first: Dict[int, dict], last: Dict[int, dict]) -> List[dict]:
    """Per process: its role, CPU and each part's totals over the window."""
    out = []
    for pid, end in last.items():
        start = first.get(pid, {"parts": {}, "process_cpu_ns": 0, "at_ns": end["at_ns"]})
        parts = {}
        for name, totals in end["parts"].items():
            before = start["parts"].get(name, {})
            parts[name] = {k: v - before.get(k, 0) for k, v in totals.items()}
        out.append({"pid": pid, "role": end["role"], "cpu_ns": end["process_cpu_ns"] - start["process_cpu_ns"],
                    "wall_ns": end["at_ns"] - start["at_ns"], "parts": parts})
    return out


# -- the table ---------------------------------------------------------------------------------
class Window:
    """One window's per-process totals, read as per-message figures."""

    def __init__(self, procs: List[dict], client: dict, kserve: bool = False) -> None:
        self.procs, self.client, self.kserve = procs, client, kserve
        self.edge = [p for p in procs if p["role"] != "engine"]  # the single process, or the fronts
        self.engine = [p for p in procs if p["role"] in ("engine", "single")]
        self.split = any(p["role"] == "engine" for p in procs)
        entry = "kserve.check" if kserve else "edge.check"
        self.messages = self.get(self.edge, entry, "msgs") or 1

    @staticmethod
    def get(procs: List[dict], part: str, field: str = "cpu_ns") -> float:
        return sum(p["parts"].get(part, {}).get(field, 0) for p in procs)

    def cpu(self, procs: List[dict], *parts: str) -> float:
        """µs of CPU per message."""
        return sum(self.get(procs, part) for part in parts) / self.messages / 1000

    def wall(self, procs: List[dict], *parts: str) -> float:
        """µs of wall per message (each message's own experience of a batch-level part)."""
        return sum(self.get(procs, part, "wall_ns") for part in parts) / self.messages / 1000

    def events(self, procs: List[dict], part: str) -> float:
        return self.get(procs, part, "events") / self.messages

    def process_cpu(self, procs: List[dict]) -> float:
        return sum(p["cpu_ns"] for p in procs) / self.messages / 1000


def rows(w: Window) -> List[Tuple[str, Optional[float], Optional[float]]]:
    """(part, CPU µs/msg, wall µs/msg), the same parts in the same order for every mode; None
    where a part does not apply (no link with --fronts 0) or has no such figure."""
    e, g, split, ks = w.edge, w.engine, w.split, w.kserve
    ort = ("ort.gather", "ort.run", "ort.score", "ort.split")
    check, encode = ("kserve.check", "kserve.encode") if ks else ("edge.check", "edge.encode")
    claimed = {"edge": 0.0, "engine": 0.0}  # each process's CPU the rows account for: the rest is untimed
    out: List[Tuple[str, Optional[float], Optional[float]]] = []

    def add(label: str, side: str, cpu: Optional[float], wall: Optional[float], applies: bool = True) -> None:
        out.append((label, cpu if applies else None, wall if applies else None))
        if applies and cpu is not None:
            claimed[side] += cpu

    client_wall = 1000 * w.client["latency_ms"]["mean"]
    residence = None if ks else w.wall(e, "edge.residence")
    add("gRPC receive/decode + encode/send, client, network (client mean − server residence)", "edge", None,
        None if residence is None else client_wall - residence)
    add("request checks (" + ("KServe: model, sequence, tensors" if ks else "message kind, options, tokens") + ")",
        "edge", w.cpu(e, check), w.wall(e, check))
    add("front → engine: encode, pack, write (front; every frame, commits too)", "edge",
        w.cpu(e, "front.encode", "link.pack", "link.write"), None, split)
    add("engine: read, unpack, decode, dispatch", "engine", w.cpu(g, "link.read") - w.cpu(g, "host.in_order"),
        None, split)
    add("front ⇄ engine hops, both ways (front's call less the engine's answer)", "edge", None,
        w.wall(e, "front.call") - w.wall(g, "host.answer"), split)
    add("queueing: waiting for the batch ahead, and for the loop after", "engine", None,
        w.wall(g, "engine.step") - w.wall(g, "engine.batch") - w.wall(g, "engine.dispatch"))
    add("batch formation (the worker thread takes the queued steps)", "engine", w.cpu(g, "engine.dispatch"),
        w.wall(g, "engine.dispatch"))
    add("worker thread around the model calls (groups, hand-back to the loop)", "engine", None,
        w.wall(g, "engine.batch") - w.wall(g, *ort))
    add("gather states [L, B, H]", "engine", w.cpu(g, "ort.gather"), w.wall(g, "ort.gather"))
    add("onnxruntime run", "engine", w.cpu(g, "ort.run"), w.wall(g, "ort.run"))
    add("scoring (log-softmax, top-k)", "engine", w.cpu(g, "ort.score"), w.wall(g, "ort.score"))
    add("split new states", "engine", w.cpu(g, "ort.split"), w.wall(g, "ort.split"))
    add("deliver results (loop)", "engine", w.cpu(g, "engine.deliver"), w.wall(g, "engine.deliver"))
    add("engine → front: encode, pack, write (engine)", "engine",
        w.cpu(g, "host.encode", "link.pack", "link.write"), None, split)
    add("front: read, unpack, decode reply", "edge", w.cpu(e, "link.read", "front.decode"), None, split)
    add("encode reply (" + ("KServe output tensors" if ks else "protobuf StepResult") + ")", "edge",
        w.cpu(e, encode), w.wall(e, encode))
    # With the link, the front's commit is one frame (its pack and write are in the link row above):
    # the CPU here is the engine applying it; the wall is the front's, frame written.
    add("commit (with the link: the engine applying it)", "engine" if split else "edge",
        w.cpu(g, "host.in_order") if split else w.cpu(e, "edge.commit"), w.wall(e, "edge.commit"), not ks)
    add("KServe: hold, step, commit, release (wall, engine calls)", "edge", None, w.wall(e, "kserve.run"), ks)
    untimed_edge = w.process_cpu(e) - claimed["edge"]
    untimed_engine = w.process_cpu(g) - claimed["engine"]
    add("untimed, single process or front (gRPC core and glue, event loop; single: session holds too)", "edge",
        untimed_edge - (0 if split else claimed["engine"]), None)
    add("untimed, engine (session holds, event loop, ORT's other threads)", "engine", untimed_engine, None, split)
    out.append(("**server total** (CPU: all its processes; wall: client mean latency)", w.process_cpu(w.procs),
                client_wall))
    return out


def counters(w: Window) -> str:
    e, g = w.edge, w.engine
    calls = w.events(g, 'ort.run')
    bits = [f"ORT calls/msg {calls:.3f} (mean batch {1 / calls if calls else 0:.1f})"]
    if w.split:
        bits += [f"link writes/msg front {w.events(e, 'link.write'):.2f}, engine {w.events(g, 'link.write'):.2f}",
                 f"link reads (wake-ups)/msg front {w.events(e, 'link.read'):.2f}, "
                 f"engine {w.events(g, 'link.read'):.2f}",
                 f"link frames/msg front {w.events(e, 'link.pack'):.2f}, engine {w.events(g, 'link.pack'):.2f}"]
    return "; ".join(bits)


def _f(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.0f}"


def table(points: List[dict]) -> str:
    """One column pair (CPU, wall) per (mode, streams); rows are the parts, in the order of the first."""
    labels: List[str] = []
    by_point = []
    for p in points:
        w = Window(p["procs"], p["client"], p.get("kserve", False))
        figures = {label: (cpu, wall) for label, cpu, wall in rows(w)}
        for label in figures:
            if label not in labels:
                labels.append(label)
        by_point.append(figures)
    header = ["part (µs per message)"]
    for p in points:
        header += [f"{p['name']} CPU", f"{p['name']} wall"]
    body = []
    for label in labels:
        cells = [label]
        for figures in by_point:
            cpu, wall = figures.get(label, (None, None))
            cells += [_f(cpu), _f(wall)]
        body.append(cells)
    lines = _md(header, body).splitlines()
    lines[1] = "|---|" + "|".join("---:" for _ in header[1:]) + "|"
    return "\n".join(lines)


def notes(points: List[dict]) -> List[str]:
    out = []
    for p in points:
        c = p["client"]
        w = Window(p["procs"], c, p.get("kserve", False))
        rate = c.get("msgs_per_s") or c.get("infer_per_s") or 0
        echo = p.get("echo")
        floor = (f"; echo floor {echo['msgs_per_s']:.0f} msg/s, p50 {echo['latency_ms']['p50']:.2f} ms, "
                 f"{echo['server_us_per_msg']:.0f} µs CPU/msg" if echo and echo.get("server_us_per_msg") else "")
        p50 = c.get("latency_ms", {}).get("p50")
        out.append(f"- {p['name']}: {rate:.0f} msg/s, p50 {_f(None if p50 is None else p50 * 1000)} µs, "
                   f"{w.messages:.0f} messages timed; {counters(w)}{floor}")
    return out


# -- running it --------------------------------------------------------------------------------
def measure(server_args: List[str], streams: int, warmup: float, duration: float, clients: int,
            pool, log: Callable[[str], None], echo_target: Optional[str] = None, echo_pid: Optional[int] = None,
            kserve: Optional[Callable[[str], dict]] = None, name: str = "") -> dict:
    """One server with its timers on, one window of ``streams`` K=1 streams (or of ``kserve(target)``)."""
    from .procs import CpuMeter, ServiceProcess
    from .run import measure_point

    with tempfile.TemporaryDirectory(prefix="lstm-budget-") as tmp:
        os.environ["LSTM_BUDGET"] = tmp  # the server inherits it (tools/server_process.py copies os.environ)
        try:
            server = ServiceProcess.start(server_args)
        finally:
            del os.environ["LSTM_BUDGET"]
        try:
            marks: Dict[str, Dict[int, dict]] = {}
            point: dict = {"name": name, "streams": streams}
            if echo_target is not None:
                log(f"{name}: echo floor ...")
                point["echo"] = measure_point(pool, echo_target, streams, 1, warmup, duration, echo_pid)
            log(f"{name}: service, timers on ...")
            if kserve is None:
                meter = CpuMeter(server.pid)

                def on_start() -> None:
                    marks["first"] = snapshot(Path(tmp))
                    meter.start()

                def on_stop() -> None:
                    meter.stop()
                    marks["last"] = snapshot(Path(tmp))

                client = pool.run(server.target, streams, 1, warmup, duration, on_start, on_stop)
                client["server_cpu"] = meter.cores()
            else:
                marks["first"] = snapshot(Path(tmp))
                client = kserve(server.target)
                marks["last"] = snapshot(Path(tmp))
                point["kserve"] = True
            point["client"] = client
            point["procs"] = difference(marks["first"], marks["last"])
        finally:
            server.stop()
    return point


def kserve_client(args, streams: int, duration: float) -> Callable[[str], dict]:
    from lstm_service.model.card import load_card

    from .kserve import find_perf_analyzer, input_data, perf_analyzer_point

    binary = find_perf_analyzer(args.perf_analyzer)
    model_name = load_card(Path(args.model)).name

    def run(target: str) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            data = input_data(Path(tmp) / "input.json", args.sequence_length)
            row = perf_analyzer_point(binary, target, model_name, streams, args.sequence_length,
                                      int(duration * 1000), data, Path(tmp), ["--request-count",
                                                                              str(max(200, 400 * streams))])
        if "error" in row:
            raise RuntimeError(f"perf_analyzer failed: {row['error']}")
        row["msgs_per_s"] = row["infer_per_s"]
        row["latency_ms"]["mean"] = row["latency_ms"]["p50"]  # perf_analyzer reports no mean
        return row

    return run


def kserve_extra(points: List[dict], kserve: List[dict]) -> List[str]:
    """Per (mode, streams): KServe's CPU per step over lstm.v1's, and the parts that differ most."""
    v1 = {p["name"]: p for p in points}
    out = []
    for k in kserve:
        base = v1.get(k["name"].replace("KServe ", "", 1))
        if base is None:
            continue
        ours = {label: cpu for label, cpu, _ in rows(Window(k["procs"], k["client"], True)) if cpu is not None}
        theirs = {label: cpu for label, cpu, _ in rows(Window(base["procs"], base["client"])) if cpu is not None}
        total = next(label for label in ours if label.startswith("**server total**"))
        plain = {label.split(" (")[0]: cpu for label, cpu in theirs.items()}
        diffs = sorted(((cpu - plain.get(label.split(" (")[0], 0.0), label.split(" (")[0])
                        for label, cpu in ours.items() if label != total), reverse=True)
        parts = ", ".join(f"{name} {d:+.0f}" for d, name in diffs[:4] if abs(d) >= 1)
        out.append(f"- {k['name']}: {ours[total] - theirs[total]:+.0f} µs CPU per step over lstm.v1 "
                   f"({ours[total]:.0f} vs {theirs[total]:.0f}); most: {parts}")
    return out


def render(results: dict) -> str:
    m = results["machine"]
    head = (f"Model {results['settings']['model']} ({results['settings']['precision']}), "
            f"{m.get('cpu')}, {m.get('cores')} cores, load average at the end {m.get('loadavg_at_end')}; "
            f"{results['settings']['duration']:g} s window per point, K=1 (one token per message).")
    parts = [head, "", table(results["points"]), "", *notes(results["points"])]
    if results.get("kserve"):
        parts += ["", "KServe v2 (perf_analyzer, --streaming sequences), same parts:", "", table(results["kserve"]),
                  "", *notes(results["kserve"]), "", "KServe's extra cost per step, beside lstm.v1 at the same point:",
                  "", *kserve_extra(results["points"], results["kserve"])]
    return "\n".join(parts)


def write_docs(path: Path, text: str) -> None:
    """Replace the text between the budget markers of ``path`` with ``text``."""
    doc = path.read_text()
    if BEGIN not in doc or END not in doc:
        raise ValueError(f"{path} has no {BEGIN} ... {END} markers")
    before, rest = doc.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    path.write_text(f"{before}{BEGIN}\n{text}\n{END}{after}")


def main(args, server_args: List[str], duration: float, warmup: float) -> int:
    import sys

    from .load import ClientPool
    from .procs import EchoProcess
    from .report import write_mode

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    streams = [int(x) for x in (args.streams or ",".join(map(str, STREAMS))).split(",")]
    results: dict = {"machine": facts(), "settings": {"model": args.model, "precision": args.precision,
                                                      "duration": duration, "warmup": warmup,
                                                      "server_args": " ".join(server_args), "streams": streams},
                     "points": [], "kserve": []}
    echo = EchoProcess.start()
    try:
        with ClientPool(args.clients) as pool:
            for mode, flags in MODES:
                for n in streams:
                    name = f"{mode}, {n} stream{'s' if n > 1 else ''}"
                    results["points"].append(measure([*server_args, *flags], n, warmup, duration, args.clients,
                                                     pool, log, echo.target, echo.pid, name=name))
                    if args.kserve_budget:
                        log(f"{name}: KServe v2 via perf_analyzer ...")
                        results["kserve"].append(measure([*server_args, *flags], n, warmup, duration, args.clients,
                                                         pool, log, kserve=kserve_client(args, n, duration),
                                                         name=f"KServe {name}"))
    finally:
        echo.stop()
    results["machine"]["loadavg_at_end"] = loadavg()
    text = render(results)
    print(text, flush=True)
    write_mode(Path(args.out), "budget", text, results, results["machine"])
    if args.write_docs:
        write_docs(Path(args.write_docs), text)
        log(f"wrote the table into {args.write_docs}")
    return 0
