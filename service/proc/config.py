"""Server configuration: one frozen dataclass, read once at startup.

Every option is a command-line flag and an environment variable
``LSTM_<NAME>`` (flag wins over variable, variable over default), e.g.
``--max-sessions 500`` or ``LSTM_MAX_SESSIONS=500``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence

from ..api.errors import ConfigError

DEFAULT_MODEL = "models/shakespeare"


@dataclass(frozen=True)
class Config:
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "model directory (model.json + ONNX files)"})
    precision: str = field(default="fp32", metadata={"help": "fp32 | int8 (a precision in model.json)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda: auto asks for CUDA then CPU"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0 in containers)"})
    port: int = field(default=50051, metadata={"help": "gRPC port (0: pick a free one)"})
    fronts: int = field(default=-1, metadata={"help": "front processes serving gRPC on --port, in front of one engine process that owns the model and every session (-1: one per CPU core but one, at least 1; 0: a single process does everything)"})
    max_sessions: int = field(default=10000, metadata={"help": "sessions held at once; the least recently used idle one is evicted beyond"})
    session_ttl: float = field(default=600.0, metadata={"help": "default idle time-to-live of a session, seconds"})
    max_session_ttl: float = field(default=86400.0, metadata={"help": "largest TTL a client may ask for, seconds"})
    reap_interval: float = field(default=5.0, metadata={"help": "seconds between sweeps for expired sessions"})
    max_tokens_per_message: int = field(default=4096, metadata={"help": "tokens in one step, prompt or prefill"})
    max_generate_tokens: int = field(default=4096, metadata={"help": "tokens one Generate call may produce"})
    journal_calls: int = field(default=2, metadata={"help": "each session's journal reaches back this many of its largest calls (a full prompt plus a full Generate each; at least the whole last call): expected_steps below the count rewinds there (0: off)"})
    max_reply_bytes: int = field(default=4 << 20, metadata={"help": "largest reply a step may need, bytes (gRPC clients accept 4 MiB by default); a step whose reply could be larger is refused before it runs"})
    max_batch: int = field(default=64, metadata={"help": "steps of different sessions run in one onnxruntime call"})
    max_batch_delay_ms: float = field(default=2.0, metadata={"help": "wait up to this long to fill a batch, only while the last batch had several steps and an active caller has not sent yet; a lone stream never waits (0: never wait)"})
    inline_max_ms: float = field(default=1.0, metadata={"help": "a lone step (nothing else queued or running) known to take at most this long runs on the event loop thread, skipping the worker-thread hop (0: always the worker)"})
    queue_size: int = field(default=1024, metadata={"help": "steps waiting for the model; beyond it RESOURCE_EXHAUSTED"})
    ort_threads: int = field(default=1, metadata={"help": "onnxruntime intra-op threads (0: onnxruntime's default)"})
    ort_spin: bool = field(default=False, metadata={"help": "let onnxruntime threads spin-wait (lower latency, burns CPU)"})
    grace: float = field(default=10.0, metadata={"help": "seconds in-flight calls get to finish on SIGTERM/SIGINT"})
    metrics_port: int = field(default=0, metadata={"help": "Prometheus /metrics port (0: off)"})
    # Identity (docs/security.md): with neither a tokens file nor a client CA, every call is "anonymous".
    tokens_file: str = field(default="", metadata={"help": "bearer tokens, lines 'principal: sha256(token) [admin]', reloaded on SIGHUP ('': no token auth)"})
    tls_cert: str = field(default="", metadata={"help": "server certificate (PEM) for TLS ('': plaintext)"})
    tls_key: str = field(default="", metadata={"help": "the certificate's private key (PEM)"})
    tls_client_ca: str = field(default="", metadata={"help": "CA (PEM) that client certificates must chain to: mutual TLS, a call without a token acts as the certificate's CN"})
    open_reflection: bool = field(default=False, metadata={"help": "serve reflection without credentials when auth is on"})
    # Fairness: per principal (0: no limit).
    max_sessions_per_principal: int = field(default=0, metadata={"help": "sessions one principal may hold (0: no limit beyond --max-sessions)"})
    max_streams_per_principal: int = field(default=0, metadata={"help": "streams one principal may have open at once (0: no limit)"})
    tokens_per_second_per_principal: float = field(default=0.0, metadata={"help": "tokens one principal may feed per second, a token bucket with a burst of one message (0: no limit)"})
    stream_idle_timeout: float = field(default=300.0, metadata={"help": "seconds an open stream may send nothing before it is ended (the session stays); 0: never"})
    prefill_chunk: int = field(default=64, metadata={"help": "a longer input runs as chunks of this many tokens, other sessions' steps batched in between (0: one call)"})
    # Durability (docs/durability.md).
    state_store: str = field(default="", metadata={"help": "redis://host:port/db to snapshot sessions to and resume them from ('': memory only)"})
    snapshot_every: int = field(default=64, metadata={"help": "snapshot a session every this many committed tokens (0: only when idle, evicted or drained)"})
    snapshot_idle_seconds: float = field(default=2.0, metadata={"help": "snapshot a session idle this long with unsaved steps"})
    replica_id: str = field(default="", metadata={"help": "this replica's name in the state store's session leases and heartbeat (with --state-store; '': a random one per start)"})
    lease_ms: int = field(default=400, metadata={"help": "heartbeat TTL in ms (with --state-store): renewed every third of it; a dead replica's sessions are taken over by another within it"})
    session_key_file: str = field(default="", metadata={"help": "secret key (any bytes, 32+) that signs ExportSession blobs; servers that share it accept each other's blobs ('': export/import off)"})
    http_port: int = field(default=0, metadata={"help": "HTTP port for the explain page and its JSON endpoint, a bridge to this server's Explain RPC (0: off; docs/explain.md)"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG | INFO | WARNING | ERROR"})
    log_format: str = field(default="text", metadata={"help": "text (key=value) | json, one line per event"})

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(what)

        need(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")
        need(0 <= self.port <= 65535, f"port must be in [0, 65535], got {self.port}")
        need(self.fronts >= -1, f"fronts must be -1 (one per core but one), 0 (single process) or more, got {self.fronts}")
        need(self.max_sessions >= 1, f"max_sessions must be >= 1, got {self.max_sessions}")
        need(self.session_ttl > 0, f"session_ttl must be > 0, got {self.session_ttl}")
        need(self.max_session_ttl >= self.session_ttl, "max_session_ttl must be >= session_ttl")
        need(self.reap_interval > 0, f"reap_interval must be > 0, got {self.reap_interval}")
        need(self.max_tokens_per_message >= 1, "max_tokens_per_message must be >= 1")
        need(self.max_generate_tokens >= 1, "max_generate_tokens must be >= 1")
        need(self.journal_calls >= 0, "journal_calls must be >= 0 (0: off)")
        need(self.max_reply_bytes >= 1024, f"max_reply_bytes must be >= 1024, got {self.max_reply_bytes}")
        need(self.max_batch >= 1, f"max_batch must be >= 1, got {self.max_batch}")
        need(self.max_batch_delay_ms >= 0, "max_batch_delay_ms must be >= 0")
        need(self.inline_max_ms >= 0, "inline_max_ms must be >= 0")
        need(self.queue_size >= 1, f"queue_size must be >= 1, got {self.queue_size}")
        need(self.ort_threads >= 0, "ort_threads must be >= 0")
        need(self.grace >= 0, "grace must be >= 0")
        need(0 <= self.metrics_port <= 65535, "metrics_port must be in [0, 65535]")
        need(0 <= self.http_port <= 65535, f"http_port must be in [0, 65535] (0: off), got {self.http_port}")
        need(bool(self.tls_cert) == bool(self.tls_key), "tls_cert and tls_key go together: set both or neither")
        need(not self.tls_client_ca or bool(self.tls_cert), "tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        need(self.max_sessions_per_principal >= 0 and self.max_streams_per_principal >= 0,
             "per-principal limits must be >= 0 (0: no limit)")
        need(self.tokens_per_second_per_principal >= 0, "tokens_per_second_per_principal must be >= 0")
        need(self.stream_idle_timeout >= 0, "stream_idle_timeout must be >= 0 (0: never)")
        need(self.prefill_chunk >= 0, "prefill_chunk must be >= 0 (0: one call)")
        need(not self.state_store or self.state_store.startswith("redis://"),
             "state_store must be a redis://host:port/db URL")  # the URL may hold a password: not echoed
        need(self.snapshot_every >= 0 and self.snapshot_idle_seconds > 0,
             "snapshot_every must be >= 0 and snapshot_idle_seconds > 0")
        need(50 <= self.lease_ms <= 60000, f"lease_ms must be in [50, 60000], got {self.lease_ms}")
        need(all(ch.isalnum() or ch in "-_." for ch in self.replica_id) and len(self.replica_id) <= 64,
             f"replica_id may hold only letters, digits, '-', '_' and '.' (at most 64), got {self.replica_id!r}")
        need(self.log_format in ("text", "json"), f"log_format must be text or json, got {self.log_format!r}")
        need(self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
             f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def summary(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def env_name(name: str) -> str:
    return "LSTM_" + name.upper()


def _parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"expected a boolean (1/0, true/false), got {text!r}")


def invoked_as() -> str:
    """The name the user ran: ``lstm-serve`` (the console script) or ``python -m lstm_service``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m lstm_service" if name in ("", "-c", "__main__.py") else name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=invoked_as(),
        description="Serve a recurrent language model over gRPC (lstm.v1.LstmService).",
        epilog="Every flag can also be set by an environment variable LSTM_<NAME> "
        "(e.g. LSTM_PORT=50052); a flag wins over the variable.",
    )
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env {env_name(f.name)}; default {f.default}]"
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, dest=f.name, default=None, type=kind, help=help_text)
    return parser


def load_config(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> Config:
    """Flags, then LSTM_* variables, then defaults. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    values: Dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if args.get(f.name) is not None:
            values[f.name] = args[f.name]
        elif env_name(f.name) in environ:
            raw = environ[env_name(f.name)]
            try:
                if str(f.type) == "bool":
                    values[f.name] = _parse_bool(raw)
                else:
                    values[f.name] = {"int": int, "float": float}.get(str(f.type), str)(raw)
            except ValueError as exc:
                raise ConfigError(f"{env_name(f.name)}={raw!r}: {exc}") from exc
    return Config(**values)


def options_table() -> str:
    """Every option as a Markdown table (docs/configuration.md is this, checked by a test)."""
    rows = ["| flag | environment | default | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(Config):
        default = f"`{f.default}`" if f.default not in ("", None) else "(none)"
        text = str(f.metadata["help"]).replace("|", "\\|")
        rows.append(f"| `--{f.name.replace('_', '-')}` | `{env_name(f.name)}` | {default} | {text} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m lstm_service.service.proc.config > the table in docs/configuration.md
    print(options_table(), end="")
