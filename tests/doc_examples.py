"""The examples of a Markdown document, read from its fenced code blocks (tests/test_docs_examples.py runs them).

- ```bash and ```python blocks are examples. A document's bash examples form one shell session and its
  python examples one namespace, each in document order: a reader follows one of the two.
- A block preceded by `<!-- output -->` is what the example just before it prints.
- ```yaml blocks are server configs; anything else (json, text, no language) shows replies or log lines.
- An example that cannot run against a test session's server says why on the line before it:
  `<!-- not run: <why> -->` (for instance: it starts a server, which the session has done already).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!-- not run: (?P<why>.+?) -->\s*$")
OUTPUT = re.compile(r"^\s*<!-- output -->\s*$")
EXAMPLE_LANGUAGES = ("bash", "python")


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    not_run: str | None  # why it is not run, or None
    is_output: bool  # shows what the example before it prints

    @property
    def where(self) -> str:
        return f"{self.document.name}:{self.line}"


def blocks(document: Path) -> list[Block]:
    """Every fenced block of `document`, with the marker comment on the line before it (if any)."""
    lines = document.read_text().splitlines()
    found: list[Block] = []
    number = 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if opening is None:
            number += 1
            continue
        indent, end = opening["indent"], number + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[number + 1:end])
        before = lines[number - 1] if number else ""
        not_run = NOT_RUN.match(before)
        found.append(Block(document, number + 1, opening["lang"], body + "\n", not_run and not_run["why"],
                           OUTPUT.match(before) is not None))
        number = end + 1
    return found


def examples(document: Path, language: str) -> list[tuple[Block, Block | None]]:
    """The runnable examples of one language, each with the output block that follows it (or None)."""
    found = blocks(document)
    runnable = []
    for position, block in enumerate(found):
        if block.language != language or block.not_run is not None or block.is_output:
            continue
        following = found[position + 1] if position + 1 < len(found) else None
        runnable.append((block, following if following is not None and following.is_output else None))
    return runnable
