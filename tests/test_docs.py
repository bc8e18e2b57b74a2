"""Docstrings and comments in ``src/`` cite only what is in the repository.

Every ``docs/NAME.md`` a source file names must exist, and a section named
right after it in quotes (``docs/hub.md, "Nested hives"``) must be one of that
file's headings; documents that live outside the repository (the notes the
project was started from) must not be cited at all.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOCS = ROOT / "docs"

CITATION = re.compile(r'docs/([A-Za-z0-9_-]+\.md)(?:[,;]?\s*(?:section\s*)?"([^"]+)")?')
OUTSIDE = re.compile(
    r"CLIENT-REFERENCE|CLIENT\.md|HUB\.md|V3\.md|V3-VECTORS|hub notes|USERS\.md|STYLE\.md|"
    r"DESIGN\.md|ARCHITECTURE-REVIEW|seed docs? \d|shared/"
)


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*") if p.suffix in {".py", ".c"})


def _headings(doc: Path) -> set[str]:
    return {
        line.lstrip("#").strip().strip("`").lower()
        for line in doc.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


def _text(path: Path) -> str:
    # Fold line breaks so a citation wrapped over two docstring lines is one string.
    return re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text(encoding="utf-8"))


def test_cited_docs_and_sections_exist() -> None:
    bad = []
    for path in _sources():
        for match in CITATION.finditer(_text(path)):
            name, section = match.groups()
            doc = DOCS / name
            rel = path.relative_to(ROOT)
            if not doc.exists():
                bad.append(f"{rel}: docs/{name} does not exist")
            elif section and section.lower() not in _headings(doc):
                bad.append(f'{rel}: docs/{name} has no section "{section}"')
    assert not bad, "citations of missing docs or sections:\n  " + "\n  ".join(bad)


def test_nothing_outside_the_repository_is_cited() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _sources()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not bad, "citations of documents outside the repository:\n  " + "\n  ".join(bad)
