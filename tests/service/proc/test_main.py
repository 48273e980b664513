"""The event loop the server runs on (service/loops.py): uvloop where installed, else asyncio."""
from __future__ import annotations

import asyncio
import importlib.util

from lstm_service.service.proc.main import event_loop_runner


def test_the_runner_runs_on_the_loop_it_names():
    runner, kind = event_loop_runner()
    assert kind == ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    with runner:
        assert runner.run(loop_module()).startswith("uvloop" if kind == "uvloop" else "asyncio")
