"""The package's shape, checked: no module reaches into another's private names, the
rooms import one way (edge -> api <- core; the front side of the link -> api and
link only; api -> nothing else at run time), and the wheel ships every package."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
PACKAGE = "lstm_service.service"


def modules() -> Iterator[Tuple[str, Path]]:
    """(dotted name inside service/, file) of every hand-written module (not generated code)."""
    for path in sorted(SERVICE.rglob("*.py")):
        parts = path.relative_to(SERVICE).with_suffix("").parts
        if parts[0] == "proto":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


MODULES = dict(modules())


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _target(node: ast.ImportFrom, package: str) -> str:
    """The service-relative dotted module an import names ('' for the package; None outside)."""
    if node.level:
        base = package.split(".") if package else []
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        return ".".join(base + ([node.module] if node.module else []))
    module = node.module or ""
    if module == PACKAGE or module.startswith(PACKAGE + "."):
        return module[len(PACKAGE) + 1:]
    return "<outside>"


def _type_checking_only(tree: ast.Module) -> Set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (types only, never run)."""
    lines: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        lines.add(sub.lineno)
    return lines


def imports_of(name: str, path: Path, run_time_only: bool = True) -> List[str]:
    """The service modules ``name`` imports (dotted, service-relative)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree) if run_time_only else set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.lineno not in skip:
            target = _target(node, _package_of(name, path))
            if target == "<outside>":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                found.append(sub if sub in MODULES else target)
    return found


def test_no_module_uses_another_modules_private_names():
    offences = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        package = _package_of(name, path)
        module_names: Dict[str, str] = {}  # local name -> service module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(node, package)
                if target == "<outside>":
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    if sub in MODULES:
                        module_names[alias.asname or alias.name] = sub
                    elif alias.name.startswith("_") and not alias.name.startswith("__"):
                        offences.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {target} import {alias.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_names and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert offences == [], "private names used across modules:\n" + "\n".join(offences)


def _room(module: str) -> str:
    return module.split(".")[0]


ANYWHERE = {"proc.logs", "proc.budget"}  # leaves every room may use: the log line format, the cost timers


def test_rooms_import_one_way():
    allowed = {
        "api": {"api"},
        "edge": {"api", "edge", "proto"},
        "link": {"api", "link", "core"},  # the engine side (engine_host.py) drives the core
        "core": {"api", "core", "persist"},  # durability: the engine writes snapshot records
        "persist": {"api", "core", "persist"},
    }
    front_side = {"link.remote_engine", "link.engine_link", "link.messages", "link.hold_messages",
                  "link.call_messages", "link.record_messages", "link.ops", "link.wire_values", "link.transport"}
    offences = []
    for name, path in MODULES.items():
        room = _room(name) if name else ""
        rooms = {_room(m) for m in imports_of(name, path) if m and m not in ANYWHERE}
        if name in front_side:
            wrong = rooms - {"api", "link"}
        elif room in allowed:
            wrong = rooms - allowed[room]
        else:
            continue  # proc/ wires everything; the package's own __init__/__main__
        if wrong:
            offences.append(f"{name} imports {sorted(wrong)}")
    assert offences == [], "\n".join(offences)


def test_the_wheel_ships_every_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    dirs = config["tool"]["setuptools"]["package-dir"]
    missing = []
    for dotted, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            package = ".".join((dotted, *rel))
            if package not in listed:
                missing.append(package)
    assert missing == [], f"packages with an __init__.py the wheel would leave out: {missing}"
    assert not (SERVICE / "process.py").exists() and not (SERVICE / "build_proto.py").exists()
