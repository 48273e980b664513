"""The principals the auth tests use: their bearer tokens, a --tokens-file that
names them (ops is an admin), and the metadata a call sends as one of them."""
from __future__ import annotations

import hashlib
from pathlib import Path

TOKENS = {"alice": "alice-secret-token", "bob": "bob-secret-token", "ops": "ops-secret-token"}
ADMINS = {"ops"}


def tokens_file(tmp_path: Path, *principals: str) -> Path:
    """A tokens file for ``principals`` (all of TOKENS if none), as --tokens-file reads it."""
    path = tmp_path / "tokens"
    lines = [f"{who}: {hashlib.sha256(TOKENS[who].encode()).hexdigest()}{' admin' if who in ADMINS else ''}"
             for who in (principals or TOKENS)]
    path.write_text("# principal: sha256(token) [admin]\n" + "\n".join(lines) + "\n")
    return path


def bearer(who: str) -> tuple:
    return ("authorization", f"Bearer {TOKENS[who]}")


def as_(who: str) -> tuple:
    """Call metadata that authenticates as ``who``."""
    return (bearer(who),)
