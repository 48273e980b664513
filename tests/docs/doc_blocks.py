"""The code blocks of README.md, docs/*.md and the client package's README, and the commands in them.

A command is one logical line of an ``sh`` block (backslash continuations
joined, comments dropped), written as its normalised text (whitespace
collapsed), which is also how tests/docs/test_docs_commands.py lists the
ones it does not run. A ``python`` block is one command: the whole snippet.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "clients" / "python" / "README.md"]
RUN = {"sh", "python"}  # blocks whose content is checked
OTHER = {"text", "proto", "js", "yaml"}  # output, diagrams, other languages' examples: read, not run
FENCE = re.compile(r"^```(\S*)\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # of the opening fence
    lang: str
    code: str
    after: str  # the doc's text after the closing fence (for the output a snippet is said to print)


@dataclass(frozen=True)
class Command:
    block: Block
    text: str  # normalised: comments dropped, continuations joined, whitespace collapsed

    @property
    def where(self) -> str:
        return f"{self.block.doc}:{self.block.line}"


def blocks() -> List[Block]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            found.append(Block(str(path.relative_to(ROOT)), text[:m.start()].count("\n") + 1, m.group(1),
                               m.group(2), text[m.end():m.end() + 600]))
    return found


def strip_comment(line: str, quote: str = "") -> Tuple[str, str]:
    """``cmd "a # b"  # note`` -> ``cmd "a # b"``: a ``#`` that starts a word outside quotes.
    Also the quote still open at the line's end ("" if none), given the one open at its start."""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), ""
    return line.rstrip(), quote


def commands(block: Block) -> Iterator[Command]:
    if block.lang == "python":
        yield Command(block, block.code.strip())
        return
    pending, quote = "", ""
    for raw in block.code.splitlines():
        line, quote = strip_comment(raw, quote)
        if line.endswith("\\") or quote:  # a continuation, or a quoted string that goes on
            pending += (line[:-1] if line.endswith("\\") else line) + " "
            continue
        whole = " ".join((pending + line).split())
        pending = ""
        if whole:
            yield Command(block, whole)


def all_commands() -> List[Command]:
    return [c for b in blocks() if b.lang in RUN for c in commands(b)]
