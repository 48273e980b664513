"""What the bench tests share: ``python -m bench`` run as a user runs it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def run_bench():
    """run_bench(*argv) -> stdout of ``python -m bench *argv`` from the repository root; fails on a non-zero exit."""

    def run(*argv: str) -> str:
        result = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=ROOT, capture_output=True, text=True,
                                timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    return run
