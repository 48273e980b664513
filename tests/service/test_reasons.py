"""docs/errors.md lists every ErrorInfo reason the server sends: the raise sites of service/
are read (ast) and each reason they name must be in service/api/reasons.py with the same code."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from lstm_service.service.api.reasons import REASONS, reasons_table

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for p in (ROOT / "service").rglob("*.py") if "proto" not in p.relative_to(ROOT).parts]


def _string(node: Optional[ast.AST]) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _classes(trees) -> Dict[str, Tuple[Optional[str], Optional[str]]]:
    """Exception class -> (code, default reason), following base classes across service/."""
    found: Dict[str, Tuple[Optional[str], Optional[str], list]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                attrs = {t.id: _string(s.value) for s in node.body if isinstance(s, ast.Assign)
                         for t in s.targets if isinstance(t, ast.Name)}
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                found[node.name] = (attrs.get("code"), attrs.get("default_reason"), bases)

    def resolve(name: str, attr: int) -> Optional[str]:
        if name not in found:
            return None
        own = found[name][attr]
        return own if own is not None else next(
            (v for v in (resolve(b, attr) for b in found[name][2]) if v is not None), None)

    return {name: (resolve(name, 0), resolve(name, 1)) for name in found}


def raised_reasons() -> Iterator[Tuple[str, Optional[str], str]]:
    """(reason, code, where) for every reason service/ can send."""
    trees = {path: ast.parse(path.read_text()) for path in SOURCES}
    classes = _classes(trees.values())
    for name, (code, default) in classes.items():
        if default is not None:
            yield default, code, f"class {name}"
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if func == "rich_status" and len(node.args) >= 3 and _string(node.args[2]) is not None:
                yield _string(node.args[2]), _string(node.args[0]), where  # type: ignore[misc]
            for keyword in node.keywords:
                if keyword.arg == "reason" and _string(keyword.value) is not None:
                    yield _string(keyword.value), classes.get(func, (None, None))[0], where  # type: ignore[misc]


def test_every_reason_a_raise_site_names_is_in_the_table_with_its_code():
    seen = set()
    for reason, code, where in raised_reasons():
        seen.add(reason)
        assert reason in REASONS, f"{where} sends reason {reason!r}: add it to service/api/reasons.py"
        if code is not None:
            assert REASONS[reason][0] == code, f"{where} sends {reason} as {code}, the table says {REASONS[reason][0]}"
    assert len(seen) > 30, "the scan found too few raise sites: is it reading service/?"
    assert not set(REASONS) - seen, f"listed but never sent: {sorted(set(REASONS) - seen)}"


def test_the_errors_doc_has_the_generated_reason_table():
    doc = (ROOT / "docs" / "errors.md").read_text()
    assert reasons_table() in doc, "docs/errors.md is stale: python -m lstm_service.service.api.reasons"


def test_no_reason_is_spelled_two_ways():
    """One name per condition: a blob of another model is OTHER_MODEL as a snapshot of one is."""
    assert "MODEL_MISMATCH" not in REASONS
    sent = {reason for reason, _, _ in raised_reasons()}
    assert "MODEL_MISMATCH" not in sent and "OTHER_MODEL" in sent
