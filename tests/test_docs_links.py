"""Every relative link in the docs and READMEs points at a file that exists and, where it
names a section (``page.md#section``), at a heading of that page.

Section anchors are GitHub's: the heading lower-cased, punctuation other than ``-`` and ``_``
dropped, spaces turned into ``-``, and ``-1``, ``-2``, ... appended to repeated headings.
Headings inside fenced code blocks are not headings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("plugins/*/README.md")])
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_HEADING = re.compile(r"^#{1,6} (.+?)\s*#*$", re.M)
_LINK = re.compile(r"\]\(([^)\s]*)\)")


def _text(page: Path) -> str:
    return _FENCE.sub("", page.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The section anchors of ``page``."""
    seen: dict[str, int] = {}
    out = set()
    for match in _HEADING.finditer(_text(page)):
        base = slug(match.group(1))
        count = seen.get(base, -1) + 1
        seen[base] = count
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_slug_follows_github() -> None:
    assert slug("The GP sampler (`gp`)") == "the-gp-sampler-gp"
    assert slug("Head-to-head: mapframe vs BoTorch, Optuna") == \
        "head-to-head-mapframe-vs-botorch-optuna"
    assert slug("N = 3 (tasks rot90, flip, roll)") == "n--3-tasks-rot90-flip-roll"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for match in _LINK.finditer(_text(page)):
        target = match.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, section = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file {path})")
        elif section and dest.suffix == ".md" and section not in anchors(dest):
            broken.append(f"{target} (no heading #{section} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"
