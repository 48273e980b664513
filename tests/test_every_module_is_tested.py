"""Every module of the server (service/, but its generated proto/ and the __init__ files) is named
by a test: a test file named after it (test_<module>.py, anywhere under tests/) or a test file that
imports it by its module name. A new module without a test fails here."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Set

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "service"
PACKAGE = "lstm_service.service"


def service_modules() -> Set[str]:
    """Dotted names, e.g. lstm_service.service.quotas or lstm_service.service.kserve.tensors."""
    found = set()
    for path in SERVICE.rglob("*.py"):
        parts = path.relative_to(SERVICE).with_suffix("").parts
        if parts[0] == "proto" or parts[-1] == "__init__":
            continue
        found.add(".".join((PACKAGE, *parts)))
    return found


def imported_by_tests() -> Set[str]:
    names = set()
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_service_module_is_named_by_a_test():
    test_files = {path.stem for path in (ROOT / "tests").rglob("test_*.py")}
    imported = imported_by_tests()
    unnamed = sorted(m for m in service_modules()
                     if m not in imported and f"test_{m.rsplit('.', 1)[1]}" not in test_files)
    assert not unnamed, f"modules no test names (add tests/.../test_<module>.py, or import it in one): {unnamed}"


def test_the_walk_sees_the_package():
    """So the check above cannot pass by finding nothing."""
    modules = service_modules()
    assert f"{PACKAGE}.__main__" in modules and len(modules) > 30
    assert not any(".proto." in m or m.endswith("__init__") for m in modules)
