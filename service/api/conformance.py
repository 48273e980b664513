"""mypy's check that both engines keep the contract (api/engine.py): each assignment
below fails type checking if an engine lacks an operation of EngineApi or answers
one with another signature. Never imported at run time (it would import every room).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.engine import Engine
    from ..core.hold import Hold, Pending
    from ..link.remote_engine import RemoteEngine, RemoteHold, RemotePending
    from .engine import EngineApi, HoldApi

    def _in_process(engine: Engine, hold: Hold) -> None:
        checked: EngineApi = engine
        held: HoldApi[Pending] = hold
        del checked, held

    def _front(engine: RemoteEngine, hold: RemoteHold) -> None:
        checked: EngineApi = engine
        held: HoldApi[RemotePending] = hold
        del checked, held
