"""Chandra's answers: layout HTML, a sequence of top-level
`<div data-bbox="…" data-label="…">…</div>` blocks, read into Markdown and layout blocks.

Format, from `datalab-to/chandra` @ a6928a27f1b8a9f5117eb75cf38abb45ed1b834d
(`chandra/output.py::parse_layout`, `chandra/prompts.py`): Chandra 1 writes `data-bbox` as
"[x0, y0, x1, y1]" normalized 0-1024 (BBOX_SCALE); Chandra 2 (SECONDARY: its prompt as copied
by third parties) as "x0 y0 x1 y1" normalized 0-1000. Both are read (`grid` says which).
Page-Header / Page-Footer blocks are left out of the Markdown (as Chandra's own markdown does
unless `include_headers_footers`) but kept as blocks.

Label → category (the `blocks` categories):

| Chandra label | category |
|---|---|
| Section-Header | title if it holds an `<h1>`, else heading |
| Text | paragraph |
| List-Group | list |
| Table | table |
| Image, Figure, Diagram | figure |
| Equation-Block | formula |
| Caption | caption |
| Page-Header | header |
| Page-Footer | footer |
| Footnote | footnote |
| Code-Block | code |
| Form, Table-Of-Contents, Complex-Block, Chemical-Block, Bibliography, any other | other |
| Blank-Page | (no block) |
"""

from __future__ import annotations

from vlbeam.transforms.answers.layout_html import Element, parse_html, to_html, to_markdown
from vlbeam.transforms.answers.preset_blocks import FURNITURE, Block, parse_grid_box

LABELS = {
    "section-header": "heading",
    "text": "paragraph",
    "list-group": "list",
    "table": "table",
    "image": "figure",
    "figure": "figure",
    "diagram": "figure",
    "equation-block": "formula",
    "caption": "caption",
    "page-header": "header",
    "page-footer": "footer",
    "footnote": "footnote",
    "code-block": "code",
    "form": "other",
    "table-of-contents": "other",
    "complex-block": "other",
    "chemical-block": "other",
    "bibliography": "other",
}
SKIPPED = frozenset({"blank-page"})


class ChandraFormatError(ValueError):
    """The answer holds no layout block: not Chandra's format."""


def _category(label: str, div: Element) -> str:
    category = LABELS.get(label.strip().lower(), "other")
    if category == "heading" and any(e.tag == "h1" for e in div.elements()):
        return "title"
    return category


def _blocks_of(root: Element) -> list[Element]:
    """The labelled divs in document order (top level, or under an html/body wrapper)."""
    found = []
    for child in root.elements():
        if child.tag == "div" and "data-label" in child.attrs:
            found.append(child)
        elif child.tag in ("html", "body", "div"):
            found.extend(_blocks_of(child))
    return found


def parse_chandra(answer: str, grid: float = 1000.0) -> tuple[str, list[Block]]:
    """(Markdown, blocks) of a Chandra answer; `grid`: 1024 for Chandra 1, 1000 for Chandra 2.
    Raises ChandraFormatError when there is no labelled block at all."""
    root = parse_html(answer)
    divs = _blocks_of(root)
    if not divs:
        raise ChandraFormatError("no <div data-label=...> layout block in the answer")
    blocks, parts = [], []
    for div in divs:
        label = div.attrs.get("data-label", "")
        if label.strip().lower() in SKIPPED:
            continue
        category = _category(label, div)
        if category == "figure":
            alts = [e.attrs.get("alt", "") for e in _descendants(div) if e.tag == "img"]
            described = to_markdown(Element("div", children=[
                c for c in div.children if isinstance(c, str) or c.tag != "img"
            ])).strip()  # fmt: skip
            text = " ".join(t for t in [*alts, described] if t.strip()).strip()
            markdown = f"![{' '.join(text.split())}]()"
        else:
            markdown = to_markdown(div).strip()
            text = markdown
        html_part = None
        if category in ("table", "formula"):
            inner = [e for e in _descendants(div) if e.tag in ("table", "math")]
            html_part = to_html(inner[0]) if inner else to_html(Element("#root", {}, div.children))
        box = parse_grid_box(div.attrs.get("data-bbox"), grid)
        blocks.append(Block(category, text, html_part, box))
        if category not in FURNITURE and markdown:
            parts.append(markdown)
    return "\n\n".join(parts), blocks


def _descendants(node: Element):
    for child in node.elements():
        yield child
        yield from _descendants(child)
