"""A PDF page's own text lines (with pdfium's boxes) → paragraph blocks, for pages answered
from the text layer (`--text-layer-policy prefer`), so every page has blocks.

pdfium's text rectangles are runs of one line in one font. Runs whose vertical extents
overlap by more than half the smaller height are one line (joined left to right, a space
between runs further apart than `WORD_GAP` line heights: a font change inside a word, as small
capitals, splits a run without a gap); lines follow
in the page's text order, and a line joins the paragraph above it when the gap between them is
under `PARAGRAPH_GAP` line heights and they overlap horizontally. Every paragraph is one
`paragraph` block with its lines' union box (categories beyond paragraph need the model;
running headers and footers are found by repetition when the document is assembled).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from vlbeam.schemas.elements import TextLine
from vlbeam.transforms.answers.blocks import GRID, Block, PageFrame

PARAGRAPH_GAP = 0.8


def _same_line(a: TextLine, b: TextLine) -> bool:
    overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
    return overlap > 0.5 * min(a.y1 - a.y0, b.y1 - b.y0)


# Runs further apart than this share of the line's height are separate words: a space between
WORD_GAP = 0.2


def _joined(runs: list[TextLine]) -> TextLine:
    runs = sorted(runs, key=lambda r: r.x0)
    height = max(r.y1 - r.y0 for r in runs)
    text = runs[0].text
    for before, run in itertools.pairwise(runs):
        gap = run.x0 - before.x1
        text += (" " if gap > WORD_GAP * height else "") + run.text
    return TextLine(
        text,
        min(r.x0 for r in runs),
        min(r.y0 for r in runs),
        max(r.x1 for r in runs),
        max(r.y1 for r in runs),
    )


def lines_of(runs: Sequence[TextLine]) -> list[TextLine]:
    """Runs on one line (consecutive in the page's order) joined."""
    lines: list[list[TextLine]] = []
    for run in runs:
        if lines and _same_line(lines[-1][-1], run):
            lines[-1].append(run)
        else:
            lines.append([run])
    return [_joined(group) for group in lines]


def text_layer_blocks(runs: Sequence[TextLine], frame: PageFrame) -> list[Block]:
    """Paragraph blocks of a page's text runs; boxes on the 0-GRID grid of `frame`."""
    paragraphs: list[list[TextLine]] = []
    for line in lines_of(runs):
        if paragraphs:
            above = paragraphs[-1][-1]
            height = max(1e-6, min(above.y1 - above.y0, line.y1 - line.y0))
            gap = line.y0 - above.y1
            overlaps = min(above.x1, line.x1) > max(above.x0, line.x0)
            if 0 <= gap + 0.25 * height < (PARAGRAPH_GAP + 0.25) * height and overlaps:
                paragraphs[-1].append(line)
                continue
        paragraphs.append([line])
    sx, sy = GRID / frame.width, GRID / frame.height
    blocks = []
    for para in paragraphs:
        box = (
            max(0.0, min(p.x0 for p in para) * sx),
            max(0.0, min(p.y0 for p in para) * sy),
            min(GRID, max(p.x1 for p in para) * sx),
            min(GRID, max(p.y1 for p in para) * sy),
        )
        text = "\n".join(p.text for p in para)
        usable = box[2] > box[0] and box[3] > box[1]
        blocks.append(Block("paragraph", text, None, box if usable else None))
    return blocks
