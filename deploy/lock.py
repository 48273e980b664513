"""Print the serving image's exact package set: what `pip install .` (no extras)
resolved to in this environment, as name==version lines (deploy/wheelhouse.sh --lock)."""
import importlib.metadata as md
import re

from packaging.requirements import Requirement

HEADER = """\
# The serving image's exact Python package set (what `pip install .` without
# extras resolved to in the tested .venv). deploy/wheelhouse.sh downloads these
# wheels on the host; the image installs them with --no-index, so the image
# build needs no network and gives the same set every time.
# Regenerate after changing pyproject.toml's dependencies: deploy/wheelhouse.sh --lock"""


# The images' Pythons: Debian bookworm's python3 is 3.11.2, python:3.11-slim a later
# 3.11.x; markers such as redis's `python_full_version < "3.11.3"` differ between them.
TARGETS = [{"python_version": "3.11", "python_full_version": "3.11.2"},
           {"python_version": "3.11", "python_full_version": "3.11.99"}]


def pin(req: Requirement) -> str:
    """A requirement only another Python needs is not installed here: its lowest allowed version."""
    lows = [s.version for s in req.specifier if s.operator in (">=", "==", "~=")]
    if not lows:
        raise SystemExit(f"lock.py: {req} is not installed here and has no lower bound to pin")
    return max(lows, key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))


def closure(project: str = "lstm-service") -> dict:
    seen, todo = {}, [Requirement(r) for r in md.requires(project) or []]
    while todo:
        req = todo.pop()
        if req.marker and not any(req.marker.evaluate({**env, "extra": ""}) for env in TARGETS):
            continue  # an extra's requirement, or another platform's
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            seen[name] = pin(req)
            continue
        seen[name] = dist.version
        todo += [Requirement(r) for r in dist.requires or []]
    return seen


if __name__ == "__main__":
    print(HEADER)
    for name, version in sorted(closure().items()):
        print(f"{name}=={version}")
