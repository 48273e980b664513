"""Every module of the server (service/, but its generated proto/ and the __init__ files) is named
by a test: a test file named after it (test_<module>.py, anywhere under tests/) or a test file that
imports it by its module name. A new module without a test fails here.

The modules whose point is the wire (the servicers, the link's two sides, reflection, the
explain page's HTTP) are tested through a real server and channel rather than imported, and a
few are driven through another module's test; they are listed in THROUGH_THE_WIRE with the test
file (or make target) that drives them, reviewed like any test."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "service"
PACKAGE = "lstm_service.service"


THROUGH_THE_WIRE: Dict[str, str] = {
    "__main__": "tests/service/test_cli.py",  # `python -m lstm_service` as a user runs it (a shim to proc/main.py)
    "api.conformance": "Makefile",  # never imported: `make lint`'s mypy checks both engines against the contract
    "core.generation": "tests/service/test_generate.py",  # Generate, its sampling and commits, over a real channel
    "core.session_records": "tests/service/test_sessions_api.py",  # get/reset/delete/fork/list over a channel
    "edge.lstm_v1": "tests/service/test_sessions_api.py",  # the lstm.v1 servicer (and most service tests)
    "edge.rpc": "tests/service/test_errors.py",  # each error's status and details as a client receives them
    "edge.kserve.servicer": "tests/service/test_kserve.py",  # KServe v2 over a real channel, tritonclient's calls
    "edge.kserve.infer": "tests/service/test_kserve.py",
    "edge.kserve.stream": "tests/service/test_kserve.py",  # ModelStreamInfer sequences
    "edge.kserve.model": "tests/service/test_kserve.py",  # ModelMetadata / ModelConfig answers
    "edge.kserve.register": "tests/service/test_kserve.py",  # the same port serving both protocols
    "edge.reflection": "tests/service/test_kserve.py",  # reflection's pool lists every served service
    "edge.web.http": "tests/service/test_explain_page.py",  # the page and its JSON over real HTTP
    "link.engine_host": "tests/service/test_fronts.py",  # the link's engine side; `make test-fronts` runs every suite
    "link.remote_engine": "tests/service/test_link_cancel.py",  # the front's engine; `make test-fronts` as above
    "link.held_keys": "tests/service/test_link_cancel.py",  # what a cut-off call held is let go at once
    "persist.ownership": "tests/service/persist/test_leases.py",  # takes, fencing, write-through: real replicas
    "core.session_leases": "tests/service/persist/test_handoff.py",  # claims before commits, handoff: real replicas
    "link.ops": "tests/service/test_link_messages.py",  # every op's message round-trips
    "link.call_messages": "tests/service/test_link_messages.py",
    "link.hold_messages": "tests/service/test_link_messages.py",
    "link.record_messages": "tests/service/test_link_messages.py",
    "proc.engine_life": "tests/service/test_lifecycle.py",  # the reaper and the snapshot store beside the engine
}


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
    wire = {f"{PACKAGE}.{name}" for name in THROUGH_THE_WIRE}
    unnamed = sorted(m for m in service_modules()
                     if m not in imported and f"test_{m.rsplit('.', 1)[1]}" not in test_files and m not in wire)
    assert not unnamed, f"modules no test names (add tests/.../test_<module>.py, or import it in one): {unnamed}"


def test_the_walk_sees_the_package():
    """So the check above cannot pass by finding nothing."""
    modules = service_modules()
    assert f"{PACKAGE}.__main__" in modules and len(modules) > 30
    assert not any(".proto." in m or m.endswith("__init__") for m in modules)


def test_the_wire_list_is_current():
    """Each listed module exists and is not otherwise named (then it leaves the list), and its test file exists."""
    modules, imported = service_modules(), imported_by_tests()
    test_files = {path.stem for path in (ROOT / "tests").rglob("test_*.py")}
    for name, test_file in THROUGH_THE_WIRE.items():
        module = f"{PACKAGE}.{name}"
        assert module in modules, f"THROUGH_THE_WIRE lists {name}, which is no longer a module"
        assert module not in imported and f"test_{name.rsplit('.', 1)[-1]}" not in test_files, (
            f"{name} is named by a test now: drop it from THROUGH_THE_WIRE")
        assert (ROOT / test_file).is_file(), f"{name}: {test_file} does not exist"
