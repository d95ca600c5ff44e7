"""Layout blocks: the closed set of categories, a block as the parsers give it, and the one
conversion of its box from the model's grid to the page's own units.

Categories (`blocks.category`):

| category | what |
|---|---|
| title | the document's or page's title (`<h1>`, `# `) |
| heading | a section heading (`<h2>`-`<h6>`, `## `…) |
| paragraph | running text |
| list | a list (its items as Markdown list lines) |
| table | a table (`html` holds it; `tables` has its cells) |
| figure | an image, chart or drawing (`text`: its description, if the model gave one) |
| formula | a display formula (`text`: `$$ LaTeX $$`; `html` the model's markup) |
| caption | a figure's or table's caption |
| header | a running page header |
| footer | a running page footer |
| footnote | a footnote |
| page_number | a page number |
| code | a code block |
| other | anything else the model labelled (forms, music, chemistry, ...) |

Boxes. Qwen3-VL gives `data-bbox="x0 y0 x1 y1"` on a 0-1000 grid relative to the image it
was shown (Qwen3-VL cookbooks: omni_recognition "the coordinates are scaled from 0 to 1000",
document_parsing's `draw_bbox_html` divides by 1000; Qwen2.5-VL used pixels of its resized
input instead, which vlbeam doesn't assume). The image is the page as displayed, so a grid box
maps linearly onto the page: to PDF points from the top-left of the page as displayed (after
`/Rotate` and the crop box) for PDF pages, to pixels of the original image for image files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

CATEGORIES = (
    "title", "heading", "paragraph", "list", "table", "figure", "formula", "caption",
    "header", "footer", "footnote", "page_number", "code", "other",
)  # fmt: skip
# Not part of a page's content: running furniture (left out of document_text, never between
# a table and its continuation)
FURNITURE = frozenset({"header", "footer", "page_number"})

GRID = 1000.0  # Qwen3-VL's relative grid
# A box may overshoot the grid by this share (rounding, a box drawn to the edge) and is
# clamped; beyond it the numbers are not on the grid (pixels, garbage) and the box is dropped.
GRID_TOLERANCE = 0.02

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Block:
    """One layout element of a page, in reading order.

    `box`: (x0, y0, x1, y1) on the model's grid (0-GRID), or None where the answer gave no
    usable box; `text`: Markdown; `html`: the model's markup (tables, formulas)."""

    category: str
    text: str
    html: str | None = None
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown block category {self.category!r}")


@dataclass(frozen=True)
class ParsedPage:
    """A page's answer read into blocks, with its Markdown and the boxes that were unusable."""

    blocks: tuple[Block, ...]
    markdown: str
    bad_boxes: int = 0  # given but malformed, empty or off the grid (dropped)
    missing_boxes: int = 0  # blocks whose answer gave no box at all


def parse_box(value: str | None) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """A `data-bbox` value ("x0 y0 x1 y1", "[x0, y0, x1, y1]", a polygon's points) → (box on
    the grid, None), or (None, why: `missing`, `malformed`, `off_grid`, `empty`).

    Corners may come in any order; a box overshooting the grid by up to GRID_TOLERANCE is
    clamped to it; a polygon (8+ numbers, pairs of x y) gives its bounding box."""
    if value is None or not value.strip():
        return None, "missing"
    try:
        nums = [float(n) for n in _NUMBER.findall(value)]
    except ValueError:
        return None, "malformed"
    if len(nums) == 4 or (len(nums) >= 6 and len(nums) % 2 == 0):
        xs, ys = nums[0::2], nums[1::2]
    else:
        return None, "malformed"
    if not all(math.isfinite(n) for n in nums):
        return None, "malformed"
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    low, high = -GRID * GRID_TOLERANCE, GRID * (1 + GRID_TOLERANCE)
    if x0 < low or y0 < low or x1 > high or y1 > high:
        return None, "off_grid"
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(GRID, x1), min(GRID, y1)
    if x1 <= x0 or y1 <= y0:
        return None, "empty"
    return (x0, y0, x1, y1), None


@dataclass(frozen=True)
class PageFrame:
    """A page's size in the units its boxes are written in: `pt` (PDF points, the page as
    displayed) or `px` (pixels of the original image)."""

    width: float
    height: float
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in ("pt", "px"):
            raise ValueError("unit must be pt or px")
        if not (self.width > 0 and self.height > 0):
            raise ValueError("a page frame needs a positive size")


def grid_to_page(box: tuple[float, float, float, float], frame: PageFrame) -> dict[str, float]:
    """A grid box → {x0, y0, x1, y1} in the page's units, from its top-left as displayed."""
    x0, y0, x1, y1 = box
    sx, sy = frame.width / GRID, frame.height / GRID
    return {
        "x0": round(x0 * sx, 3),
        "y0": round(y0 * sy, 3),
        "x1": round(x1 * sx, 3),
        "y1": round(y1 * sy, 3),
    }


# A paragraph that starts like a caption: "Figure 3:", "Fig. 2.", "Chart 1 -", "Abbildung 4"
_CAPTION_START = re.compile(
    r"^\W{0,3}(fig(ure)?|chart|graph|diagram|image|photo|plate|illustration|exhibit|map|"
    r"abbildung|abb|figura|图|圖)\.?\s*[\dIVXivx]*\s*[.:)\-\u2013\u2014\uff1a]",
    re.IGNORECASE,
)
MAX_CAPTION_CHARS = 400


def looks_like_caption(text: str) -> bool:
    return len(text) <= MAX_CAPTION_CHARS and bool(_CAPTION_START.match(text.strip()))


def figure_caption(blocks: Sequence[Block], index: int) -> str | None:
    """The caption of the figure at `index`: the block just below it, then the one just above
    it, if labelled `caption` or a short paragraph that starts like one ("Figure 3:"); None
    if neither is."""
    for near in (index + 1, index - 1):
        if 0 <= near < len(blocks):
            block = blocks[near]
            if block.category == "caption" and block.text.strip():
                return block.text.strip()
            if block.category == "paragraph" and looks_like_caption(block.text):
                return block.text.strip()
    return None


def union_box(boxes) -> tuple[float, float, float, float] | None:
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
