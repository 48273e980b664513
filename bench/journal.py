"""``python -m bench --journal``: what each session's journal costs (service/core/journal.py).

Two service processes on the same model, one with the journal (the shipped
--journal-calls), one with ``--journal-calls 0``:

- memory per idle session: the server tree's resident memory grows by this much
  per session that was created with a 16-token prompt, stepped once, then stepped
  again with expected_steps (confirming the first: the last call is in doubt), and,
  on the journaled server, the same then confirmed whole with a RewindSession to its
  own count (the journal then shares the session's state: nothing of its own);
- cost per step at 64 streams (1 token per message): steps/s, p50/p99 and server
  CPU per step, off then on and on then off, so background load shows as a
  difference between the two orders; the ratio on/off is per order.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List

import grpc

from .load import ClientPool
from .machine import facts
from .procs import ServiceProcess, memory_kb, tree
from .report import write_mode
from .run import measure_point

SESSIONS = 2000


def tree_rss_kb(pid: int) -> int:
    return sum(memory_kb(p) for p in tree(pid))


def memory_per_session(server: ServiceProcess, sessions: int, confirm_all: bool = False) -> float:
    """KB of resident memory per idle session, over ``sessions`` sessions (created, stepped, stepped
    again confirming the first; ``confirm_all``: then a RewindSession to its own count)."""
    from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
    from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.LstmServiceStub(channel)
        prompt = pb.Input(tokens=[(7 * i) % 200 + 32 for i in range(16)])
        warm = [stub.CreateSession(pb.CreateSessionRequest(prompt=prompt)).session.id for _ in range(50)]
        for sid in warm:
            stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid))
        time.sleep(0.5)  # let allocator churn settle before the baseline
        before = tree_rss_kb(server.pid)
        for _ in range(sessions):
            sid = stub.CreateSession(pb.CreateSessionRequest(prompt=prompt)).session.id
            stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[65])))
            stub.Predict(pb.PredictRequest(session_id=sid, input=pb.Input(tokens=[66]), expected_steps=17))
            if confirm_all:
                stub.RewindSession(pb.RewindSessionRequest(session_id=sid, steps=18))
        time.sleep(0.5)
        after = tree_rss_kb(server.pid)
    return (after - before) / sessions


def table(memory: dict, rows: List[dict]) -> str:
    lines = [f"memory per idle session (created with a 16-token prompt, stepped twice, the second confirming the "
             f"first; {SESSIONS} sessions): journal off {memory['off']:.1f} KB, on {memory['on']:.1f} KB, "
             f"on and confirmed whole (RewindSession to its count) {memory['on_confirmed']:.1f} KB",
             "",
             "| streams | order | off steps/s | on steps/s | on/off | off p50 / p99 ms | on p50 / p99 ms "
             "| server CPU us/step off / on |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        off, on = r["off"], r["on"]
        ratio = on["msgs_per_s"] / off["msgs_per_s"] if off["msgs_per_s"] else float("nan")
        us = ("-" if off.get("server_us_per_msg") is None or on.get("server_us_per_msg") is None else
              f"{off['server_us_per_msg']:.0f} / {on['server_us_per_msg']:.0f}")
        lines.append(f"| {r['streams']} | {r['order']} | {off['msgs_per_s']:.0f} | {on['msgs_per_s']:.0f} | "
                     f"{ratio:.3f} | {off['latency_ms']['p50']:.2f} / {off['latency_ms']['p99']:.2f} | "
                     f"{on['latency_ms']['p50']:.2f} / {on['latency_ms']['p99']:.2f} | {us} |")
    return "\n".join(lines)


def main(args, server_args: List[str], streams: List[int], warmup: float, duration: float) -> int:
    plain = journaled = None
    rows, memory = [], {}
    try:
        plain = ServiceProcess.start([*server_args, "--journal-calls", "0"])
        journaled = ServiceProcess.start(server_args)
        # each figure on a server of its own: the sessions of one measurement stay, and would skew the next
        confirmed = ServiceProcess.start(server_args)
        try:
            on_confirmed = memory_per_session(confirmed, SESSIONS, confirm_all=True)
        finally:
            confirmed.stop()
        memory = {"off": memory_per_session(plain, SESSIONS), "on": memory_per_session(journaled, SESSIONS),
                  "on_confirmed": on_confirmed}
        print(f"memory per idle session: off {memory['off']:.1f} KB, on {memory['on']:.1f} KB, on and confirmed "
              f"whole {memory['on_confirmed']:.1f} KB", flush=True)
        with ClientPool(args.clients, args.streams_per_channel, args.top_k, args.parse_responses) as pool:
            for n in streams:
                for on_first in (False, True):
                    print(f"streams {n}: journal {'on, then off' if on_first else 'off, then on'} ...", flush=True)
                    row = {}
                    for side in (("on", "off") if on_first else ("off", "on")):
                        server = journaled if side == "on" else plain
                        row[side] = measure_point(pool, server.target, n, 1, warmup, duration, server.pid)
                    rows.append({"streams": n, "tokens_per_message": 1,
                                 "order": "on, off" if on_first else "off, on", **row})
    finally:
        for service in (plain, journaled):
            if service is not None:
                service.stop()
    text = table(memory, rows)
    print(text)
    write_mode(Path(args.out), "journal", text, {"server_args": server_args, "memory_kb_per_session": memory,
                                                 "rows": rows}, facts())
    return 0
