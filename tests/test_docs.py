"""The project's documents stand on their own: every link resolves inside the repository or is public."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "deploy" / "README.md",
                    *(ROOT / "docs").glob("*.md"), *(ROOT / "r2t2" / "assets").glob("*/MODEL_CARD.md")])
LINK = re.compile(r"\]\(([^)\s#]+)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS])
def test_links_resolve_and_nothing_outside_is_cited(document: Path) -> None:
    text = document.read_text()
    local = [link for link in LINK.findall(text) if not link.startswith(("http://", "https://"))]
    missing = [link for link in local if not (document.parent / link).exists()]
    assert not missing, f"{document.name} links to files that are not in the repository: {missing}"
    # Files that lived beside the project while it was built, never in it.
    assert not re.search(r"\bMETHOD\.md|\bENVIRONMENT\.md|/work/shared", text)
    assert not re.search(r"\bissue \d+", text, re.IGNORECASE)
