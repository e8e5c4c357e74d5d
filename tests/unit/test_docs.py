"""The docs render and say nothing that points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = sorted((Path(__file__).parents[2] / "docs").glob("*.md")) + [Path(__file__).parents[2] / "README.md"]


def _tables(lines: list[str]):
    """Every markdown table row must belong to a table: a header, its |---| line, then rows, with nothing in between."""
    in_code = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("|"):
            continue
        prev, nxt = (lines[i - 1] if i else ""), (lines[i + 1] if i + 1 < len(lines) else "")
        header = re.match(r"^\|(\s*:?-{3,}:?\s*\|)+\s*$", nxt) is not None
        yield i + 1, line, prev.startswith("|") or header


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_table_row_renders_as_part_of_a_table(doc):
    lines = doc.read_text().splitlines()
    orphans = [(n, line[:60]) for n, line, ok in _tables(lines) if not ok]
    assert not orphans, f"{doc.name}: rows cut off from their table (they render as raw text): {orphans}"
    assert not [n for n, line in enumerate(lines, 1) if line.startswith(" |")], "indented table rows"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_cite_nothing_outside_the_repository(doc):
    text = doc.read_text()
    assert "REFERENCE section" not in text
    assert not re.search(r"^#.*\(issue \d+", text, re.M), "titles name internal issue numbers"
