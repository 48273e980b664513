"""Structured one-line logs (service/logs.py): the text and JSON forms of an event."""
from __future__ import annotations

import json
import logging

from lstm_service.service.proc import logs


def emitted(capsys, fmt: str, *args, **fields) -> str:
    logs.setup("INFO", fmt)
    try:
        logs.event(logging.getLogger("service.test"), *args, **fields)
        logging.getLogger("service.test").debug("below the level: not written")
    finally:
        logging.getLogger().handlers[:] = []
    return capsys.readouterr().err


def test_text_events_are_one_line_with_quoted_values_where_needed(capsys):
    line = emitted(capsys, "text", "stop_requested", by="signal", why="two words", empty="", n=3)
    assert line.count("\n") == 1
    assert line.split(" ", 1)[1] == 'INFO service.test stop_requested by=signal why="two words" empty="" n=3\n'


def test_json_events_carry_the_event_and_its_fields(capsys):
    doc = json.loads(emitted(capsys, "json", "session_open", logging.WARNING, id="abc", steps=2))
    assert doc["event"] == "session_open" and doc["level"] == "WARNING" and doc["logger"] == "service.test"
    assert (doc["id"], doc["steps"]) == ("abc", 2) and doc["ts"].endswith("Z")
