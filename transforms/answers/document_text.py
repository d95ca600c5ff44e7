"""A document's pages → its whole text (`document_text`): pages in order, page markers, exact
character spans per page, failed pages listed, running headers and footers taken out.

Running furniture is removed two ways, and stays in `pages.text` and `blocks`:
1. blocks the model (or the text-layer reader) labelled `header`, `footer` or `page_number`;
2. lines repeated at the top or bottom of most pages, whatever their label (models don't
   always label them, and the Markdown format has no labels): the first and last
   `EDGE_LINES` non-empty lines of each page are compared after normalising (case, spacing,
   every digit run → `#`, so "Page 3 of 40" and "Page 4 of 40" are one line, and a bare
   page number is `#`); one seen at the same edge on at least `REPEAT_SHARE` of the pages, or
   of the odd or of the even pages (running heads that alternate, verso and recto), and on at
   least `MIN_REPEATS` pages, is running furniture. It is taken out of a page's edge when only
   furniture lies between it and the edge.
`removed` lists each removed line once (its first occurrence as written).

Memory: the document's page texts (small strings, never pixels) are held while it is
assembled, since the output row holds all of them; a 5,000-page document of ~3 KB per page is
~15 MB of page text plus the ~15 MB row. Per page there are only its text and its block
labels.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vlbeam.transforms.answers.blocks import FURNITURE

EDGE_LINES = 2  # lines at the top and at the bottom of a page that may be furniture
REPEAT_SHARE = 0.5  # of the pages with text
MIN_REPEATS = 3
_DIGITS = re.compile(r"\d+")
_ROMAN = re.compile(r"^[ivxlcdm]+$")
_SPACE = re.compile(r"\s+")


def page_marker(page_number: int, missing: bool = False) -> str:
    """The line before each page's text in `document_text.text`."""
    return f"<!-- page {page_number}{' missing' if missing else ''} -->"


@dataclass(frozen=True)
class PageText:
    """What assembly needs of one page: its number and its blocks' (category, Markdown)."""

    page_number: int
    blocks: tuple[tuple[str, str], ...]


def normalise_line(line: str) -> str:
    """A line as compared across pages: case and spacing folded, digit runs (and a lone
    roman numeral) as `#`, Markdown emphasis and heading marks dropped."""
    text = _SPACE.sub(" ", line.strip().strip("#*_ ").lower())
    if _ROMAN.fullmatch(text):
        return "#"
    return _DIGITS.sub("#", text)


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _edges(lines: list[str]) -> tuple[list[int], list[int]]:
    """Indexes of the first and the last EDGE_LINES non-empty lines."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    return filled[:EDGE_LINES], filled[-EDGE_LINES:][::-1]


def _from_edge(lines: list[str], edge: list[int], running: set[str]) -> set[int]:
    """The edge lines to drop: from the page's edge inwards, while they are running lines
    (a line is furniture only if nothing but furniture lies between it and the edge)."""
    drop = set()
    for i in edge:
        if normalise_line(lines[i]) not in running:
            break
        drop.add(i)
    return drop


def running_lines(pages: Sequence[list[str]]) -> tuple[set[str], set[str]]:
    """(normalised top lines, normalised bottom lines) repeated on most pages (in order)."""
    # counts over all pages, the odd-numbered and the even-numbered ones (by position)
    tops: list[Counter[str]] = [Counter(), Counter(), Counter()]
    bottoms: list[Counter[str]] = [Counter(), Counter(), Counter()]
    with_text = [0, 0, 0]
    for position, lines in enumerate(pages):
        top, bottom = _edges(lines)
        if not top:
            continue
        for group in (0, 1 + position % 2):
            with_text[group] += 1
            tops[group].update({normalise_line(lines[i]) for i in top} - {""})
            bottoms[group].update({normalise_line(lines[i]) for i in bottom} - {""})

    def running(counts: list[Counter[str]]) -> set[str]:
        found = set()
        for group, counter in enumerate(counts):
            need = max(MIN_REPEATS, REPEAT_SHARE * with_text[group])
            found |= {k for k, n in counter.items() if n >= need}
        return found

    return running(tops), running(bottoms)


def assemble(
    pages: Iterable[PageText], num_pages: int | None, failed_pages: Iterable[int] = ()
) -> dict:
    """`text`, `page_spans`, `missing_pages`, `removed`, `status` of a document.

    `num_pages`: the document's page count (None if unknown: then the pages seen and the
    failed pages are all there is). A page is missing if it failed or never arrived."""
    by_number = {p.page_number: p for p in pages}
    removed: list[str] = []
    seen_removed: set[str] = set()

    def note(text: str) -> None:
        text = text.strip()
        if text and text not in seen_removed:
            seen_removed.add(text)
            removed.append(text)

    numbers = sorted(by_number)
    bodies: dict[int, list[str]] = {}
    for n in numbers:
        kept = []
        for category, text in by_number[n].blocks:
            if category in FURNITURE:
                note(text)
            elif text.strip():
                kept.append(text.strip())
        bodies[n] = _lines("\n\n".join(kept))
    tops, bottoms = running_lines([bodies[n] for n in numbers])
    for n in numbers:
        lines = bodies[n]
        top, bottom = _edges(lines)
        drop = _from_edge(lines, top, tops) | _from_edge(lines, bottom, bottoms)
        for i in sorted(drop):
            note(lines[i])
        bodies[n] = [line for i, line in enumerate(lines) if i not in drop]

    last = max([num_pages or 0, *numbers, *failed_pages], default=0)
    missing = sorted(set(range(1, last + 1)) - set(numbers))
    parts: list[str] = []
    spans: list[dict] = []
    offset = 0
    for n in range(1, last + 1):
        if parts:
            parts.append("\n\n")
            offset += 2
        marker = page_marker(n, missing=n not in by_number) + "\n"
        parts.append(marker)
        offset += len(marker)
        if n in by_number:
            body = "\n".join(bodies[n]).strip("\n")
            body = re.sub(r"\n{3,}", "\n\n", body)
            spans.append({"page_number": n, "start": offset, "end": offset + len(body)})
            parts.append(body)
            offset += len(body)
    return {
        "text": "".join(parts),
        "page_spans": spans,
        "missing_pages": missing,
        "removed": removed,
        "status": "partial" if missing else "complete",
    }
