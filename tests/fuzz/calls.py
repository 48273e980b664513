"""Making one call and judging its status: the statuses each method may
plausibly answer, and the counts a fuzz run reports."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Tuple

import grpc

C = grpc.StatusCode
# Statuses a well-behaved server may answer, per method (DEADLINE_EXCEEDED and
# CANCELLED are added per call when the fuzzer set a deadline or cancelled).
SESSION_LOOKUP = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND}
ALLOWED = {
    "Predict": {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION, C.ABORTED, C.RESOURCE_EXHAUSTED},
    "Generate": {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION, C.ABORTED, C.RESOURCE_EXHAUSTED},
    "Stream": {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS, C.FAILED_PRECONDITION, C.ABORTED,
               C.RESOURCE_EXHAUSTED},
    "CreateSession": {C.OK, C.INVALID_ARGUMENT, C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED},
    "GetSession": SESSION_LOOKUP,
    "ResetSession": SESSION_LOOKUP | {C.ABORTED},
    "DeleteSession": SESSION_LOOKUP | {C.ABORTED},
    "ForkSession": SESSION_LOOKUP | {C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED},
    "ExportSession": SESSION_LOOKUP | {C.FAILED_PRECONDITION},
    "ImportSession": {C.OK, C.INVALID_ARGUMENT, C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED, C.FAILED_PRECONDITION},
    "ListSessions": {C.OK, C.INVALID_ARGUMENT},
    "ListModels": {C.OK},
    "GetModel": {C.OK, C.NOT_FOUND, C.INVALID_ARGUMENT},
    "NoSuchMethod": {C.UNIMPLEMENTED},
}
CRASH = {C.INTERNAL, C.UNKNOWN, C.UNAVAILABLE, C.DATA_LOSS}
# Limits the *client* library enforces: hitting them means the server sent
# what it should have refused (an oversize reply, an echoed huge id).
CLIENT_LIMITS = ("larger than max", "metadata size exceeds")
OVER_CLIENT_METADATA = CLIENT_LIMITS[1]
# Statuses the service itself sends, each with google.rpc.Status details (ErrorInfo; BadRequest too
# for INVALID_ARGUMENT) in this trailer; grpc's own (UNIMPLEMENTED, DEADLINE_EXCEEDED...) have none.
DETAILS_KEY = "grpc-status-details-bin"
RICH = {C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS, C.FAILED_PRECONDITION, C.ABORTED, C.RESOURCE_EXHAUSTED}
# The bounds every error keeps whatever the request held (docs/security.md, Bounded answers).
MAX_MESSAGE_BYTES = 1024  # the status message, UTF-8
MAX_TRAILER_BYTES = 4096  # grpc-status-details-bin, serialized
LEAKS = re.compile(r"<class |Traceback|\b\w+(Error|Exception)\b|onnxruntime|ONNXRuntime")


@dataclass
class Stats:
    cases: int = 0  # fuzzed requests (the operations of the sequences)
    sequences: int = 0  # hypothesis examples: call sequences over fresh sessions, each ending in a checkpoint
    calls: int = 0  # every RPC, set-up, twin replays and checkpoints included
    statuses: Counter = field(default_factory=Counter)  # (method, code name) -> calls
    crashes: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)  # a status no well-behaved server gives
    mismatches: List[str] = field(default_factory=list)  # state or reply disagrees with the twin model
    oversize: List[str] = field(default_factory=list)  # an error over MAX_MESSAGE_BYTES / MAX_TRAILER_BYTES
    bounded: int = 0  # errors whose message and trailer were measured against the bounds
    # ambiguous ends (a step kept although the client's deadline/cancel ended the call first, a
    # Generate's tokens kept unread) brought back, through the journal, to what the client saw:
    reconciled: int = 0
    unread_tokens: int = 0  # of them, Generate tokens kept unread (rewound away)
    late_accepted: int = 0  # a late `start` or `end` step: kept, the client learns it (no rewind crosses them)
    unresolved: List[str] = field(default_factory=list)  # an ambiguous end the journal could not reconcile
    resyncs: int = 0  # twin re-copied from its session where a replay could not be exact
    # calls that ended DEADLINE_EXCEEDED/CANCELLED and were resent with their request id (the first
    # answer if they applied, a fresh run if not): record ops, and Generates (their kept tokens replayed)
    retried_with_id: int = 0
    replayed_tokens: int = 0  # of the Generates', tokens the retry replayed that the first call never showed

    def merge(self, other: "Stats") -> None:
        for name in ("cases", "sequences", "calls", "reconciled", "unread_tokens", "late_accepted", "resyncs",
                     "bounded", "retried_with_id", "replayed_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.statuses.update(other.statuses)
        for name in ("crashes", "unexpected", "mismatches", "oversize", "unresolved"):
            getattr(self, name).extend(getattr(other, name))

    def failures(self) -> List[str]:
        return self.crashes + self.unexpected + self.mismatches + self.oversize + self.unresolved

    def report(self, server_errors: Iterable[str] = ()) -> str:
        server_errors = list(server_errors)
        lines = [f"cases (fuzzed requests) {self.cases}  sequences {self.sequences}  calls in all {self.calls}",
                 f"crashes {len(self.crashes)}  unexpected statuses {len(self.unexpected)}  "
                 f"mismatches {len(self.mismatches)}  unresolved {len(self.unresolved)}",
                 f"reconciled (ambiguous ends rewound to what the client saw) {self.reconciled}, of them generate "
                 f"tokens kept unread {self.unread_tokens}  late start/end steps accepted {self.late_accepted}  "
                 f"twin resyncs {self.resyncs}",
                 f"reconciled by request id (timed-out or cancelled calls resent with their id) "
                 f"{self.retried_with_id}, Generate tokens replayed unread {self.replayed_tokens}",
                 f"errors measured against the bounds ({MAX_MESSAGE_BYTES} B message, {MAX_TRAILER_BYTES} B "
                 f"details) {self.bounded}  over them {len(self.oversize)}",
                 f"server log: ERROR lines {len(server_errors)}",
                 "statuses seen:"]
        methods = sorted({m for m, _ in self.statuses})
        for method in methods:
            seen = sorted(((code, n) for (m, code), n in self.statuses.items() if m == method), key=lambda x: -x[1])
            lines.append(f"  {method:14s} " + "  ".join(f"{code} {n}" for code, n in seen))
        for title, items in (("crashes", self.crashes), ("unexpected", self.unexpected),
                             ("mismatches", self.mismatches), ("oversize", self.oversize),
                             ("unresolved", self.unresolved),
                             ("server ERROR lines", server_errors)):
            for item in items[:5]:
                lines.append(f"first {title}: {item[:400]}")
        return "\n".join(lines)


class Caller:
    """Runs calls, records their status, and files crashes and unexpected statuses."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.case_failures: List[str] = []
        self.context = ""  # the operation being run, for the reports

    def call(self, method: str, run: Callable[[], object]) -> Tuple[grpc.StatusCode, object]:
        """(code, reply or the RpcError) of ``run()``; does not judge the status."""
        self.stats.calls += 1
        try:
            return C.OK, run()
        except grpc.RpcError as exc:
            return exc.code(), exc

    def judge(self, method: str, code: grpc.StatusCode, error: object, extra: Iterable = (), what: str = "") -> None:
        self.stats.statuses[(method, code.name)] += 1
        full = (error.details() if isinstance(error, grpc.RpcError) else "") or ""
        details = full[:300]
        if isinstance(error, grpc.RpcError) and code != C.OK:
            self._measure(method, code, full, error.trailing_metadata(), what)
            if OVER_CLIENT_METADATA in full:  # the default client dropped a trailer far over the bounds
                self.fail(self.stats.oversize, f"{method}: {details} | {what}")
                return
        if code in CRASH:
            self.fail(self.stats.crashes, f"{method} {code.name}: {details} | {what}")
        elif code not in ALLOWED.get(method, set()) | set(extra) or any(x in details for x in CLIENT_LIMITS):
            self.fail(self.stats.unexpected, f"{method} {code.name}: {details} | {what}")
        elif code in RICH:
            problem = error_problem(code, full, error.trailing_metadata())
            if problem:
                self.fail(self.stats.unexpected, f"{method} {code.name}: {problem}: {details} | {what}")

    def _measure(self, method: str, code: grpc.StatusCode, message: str, trailers, what: str) -> None:
        """File an error whose message or details trailer is over the bounds."""
        self.stats.bounded += 1
        trailer = dict(trailers or ()).get(DETAILS_KEY, b"")
        if len(message.encode()) > MAX_MESSAGE_BYTES or len(trailer) > MAX_TRAILER_BYTES:
            self.fail(self.stats.oversize, f"{method} {code.name}: a {len(message.encode())}-byte message and a "
                                           f"{len(trailer)}-byte details trailer: {message[:200]} | {what}")

    def mismatch(self, message: str) -> None:
        self.fail(self.stats.mismatches, f"{message} | during {self.context}")

    def fail(self, bucket: List[str], message: str) -> None:
        bucket.append(message)
        self.case_failures.append(message)


def metadata(header: Optional[str]):
    """Call metadata carrying x-session-id, when the value is a legal header value."""
    if header and header.isascii() and header.isprintable() and len(header) < 4096:
        return (("x-session-id", header),)
    return None


def error_problem(code: grpc.StatusCode, message: str, trailers) -> str:
    """What is wrong with an error the service sent ("" if nothing): a long or leaky
    message, or missing google.rpc.Status details."""
    from google.rpc import error_details_pb2, status_pb2

    if LEAKS.search(message):
        return "a message naming Python or onnxruntime internals"
    raw = dict(trailers or ()).get(DETAILS_KEY)
    if raw is None:
        return f"no {DETAILS_KEY} trailer"
    status = status_pb2.Status.FromString(raw)
    kinds = {d.TypeName().rsplit(".", 1)[-1] for d in status.details}
    if status.code != code.value[0] or "ErrorInfo" not in kinds:
        return f"details with code {status.code} and {sorted(kinds)}"
    info = next(d for d in status.details if d.TypeName().endswith("ErrorInfo"))
    unpacked = error_details_pb2.ErrorInfo()
    info.Unpack(unpacked)
    if not unpacked.reason:
        return "an ErrorInfo without a reason"
    if code == C.INVALID_ARGUMENT and "BadRequest" not in kinds:
        return "INVALID_ARGUMENT without BadRequest field violations"
    return ""


def predictions_problem(options, n: int, result, vocab: int = 256) -> str:
    """What is wrong with an OK step's predictions for ``n`` tokens under ``options``
    (an OutputOptions or None), "" if nothing."""
    top_k = options.top_k if options is not None and options.HasField("top_k") else 5
    all_positions = options is not None and options.all_positions
    logprobs = options is not None and options.logprobs
    predictions = result.predictions
    if len(predictions) != (n if all_positions else 1):
        return f"{len(predictions)} predictions for {n} tokens (all_positions={all_positions})"
    if [p.position for p in predictions] != (list(range(n)) if all_positions else [n - 1]):
        return f"positions {[p.position for p in predictions][:8]}"
    for p in predictions:
        probs = [c.prob for c in p.top]
        if len(p.top) != min(top_k, vocab) or probs != sorted(probs, reverse=True):
            return f"{len(p.top)} candidates (top_k {top_k}) or not most likely first"
        if any(not 0.0 <= c.prob <= 1.0 or not 0 <= c.token < vocab for c in p.top):
            return "a candidate out of range"
        if len(p.logprobs) != (vocab if logprobs else 0):
            return f"{len(p.logprobs)} logprobs (asked: {logprobs})"
    return ""
