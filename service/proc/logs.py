"""Structured one-line logs: ``event(log, "session_open", id=..., reason=...)``.

text: ``2026-01-01T12:00:00Z INFO service.sessions session_open id=abc reason="was created"``
json: ``{"ts": "...", "level": "INFO", "logger": "service.sessions", "event": "session_open", "id": "abc", ...}``
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = dict(getattr(record, "fields", {}) or {})
        name = getattr(record, "event", None)
        message = record.getMessage() if name is None else ""
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).replace("\n", " | ")
        if self.json:
            doc = {"ts": ts, "level": record.levelname, "logger": record.name}
            doc["event" if name else "message"] = name or message
            doc.update(fields)
            return json.dumps(doc, default=str)
        parts = [ts, record.levelname, record.name, name or message]
        parts += [f"{k}={_text(v)}" for k, v in fields.items()]
        return " ".join(parts)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(ch in text for ch in ' ="\n'):
        return json.dumps(text)
    return text


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def event(log: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    if log.isEnabledFor(level):
        log.log(level, name, extra={"event": name, "fields": fields})
