"""Service test set-up: ``async def test_...`` functions run in a fresh event
loop each (the hook below; no pytest-asyncio needed), capped at 60 s.
Helpers live in svc_helpers.py.
"""
from __future__ import annotations

import asyncio
import inspect

import pytest

from reference import Reference

TEST_TIMEOUT = 60


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), TEST_TIMEOUT))
        return True
    return None


@pytest.fixture(scope="session")
def reference(tiny_model_dir) -> Reference:
    return Reference(tiny_model_dir)
