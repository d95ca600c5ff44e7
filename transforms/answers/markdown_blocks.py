"""A Markdown answer (`--ocr-format markdown`) → layout blocks, from markdown-it-py's token stream.

Each top-level block of the Markdown is one block, its `text` the exact source lines:
headings (`#` title, `##`+ heading), paragraphs (a paragraph that is only an image is a
figure, one in `$$` a formula), lists, tables (pipe tables; `html` rendered by markdown-it),
code fences (```` ```math ````/```` ```latex ```` are formulas), quotes. HTML inside the Markdown
is read as QwenVL HTML (`qwenvl_html`), so an HTML table keeps its cells and any `data-bbox`.

Markdown has no boxes, except what Qwen's own "qwenvl markdown" format writes: a comment
`<!-- Image (x0, y0, x1, y1) -->` standing for a figure and `<!-- Table (x0, y0, x1, y1) -->`
before a table, on the 0-1000 grid (the cookbook's parse regex, see /work/notes/presets.md §4);
those become the figure's and the next table's box.
"""

from __future__ import annotations

import functools
import re

from vlbeam.transforms.answers.blocks import Block, ParsedPage, parse_box
from vlbeam.transforms.answers.qwenvl_html import parse_qwenvl_html

_QWEN_COMMENT = re.compile(
    r"^\s*<!--\s*(Image|Table)\s*\(\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)"
    r"\s*\)\s*-->\s*$",
    re.IGNORECASE,
)
_IMAGE_ONLY = re.compile(r"^\s*!\[([^\]]*)\]\([^)]*\)\s*$")
_OPENERS = {
    "heading_open", "paragraph_open", "bullet_list_open", "ordered_list_open", "table_open",
    "blockquote_open", "fence", "code_block", "html_block", "hr", "math_block",
}  # fmt: skip


@functools.cache
def _markdown_it():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


def parse_markdown(answer: str | None) -> ParsedPage:
    """Blocks of a Markdown answer, in order; the page's Markdown is the answer itself."""
    if not answer or not answer.strip():
        return ParsedPage((), answer or "")
    md = _markdown_it()
    lines = answer.split("\n")
    tokens = md.parse(answer)
    blocks: list[Block] = []
    table_box = None
    missing = 0
    for i, token in enumerate(tokens):
        if token.level != 0 or token.type not in _OPENERS or token.map is None:
            continue
        source = "\n".join(lines[token.map[0] : token.map[1]]).strip()
        if not source:
            continue
        kind = token.type
        if kind == "hr":
            continue
        if kind == "html_block":
            comment = _QWEN_COMMENT.match(source)
            if comment:
                box, _ = parse_box(" ".join(comment.groups()[1:]))
                if comment.group(1).lower() == "image":
                    blocks.append(Block("figure", "", None, box))
                else:
                    table_box = box
                continue
            if source.startswith("<!--"):
                continue
            parsed = parse_qwenvl_html(source)
            for block in parsed.blocks:
                if block.category == "table" and block.box is None and table_box is not None:
                    block = Block(block.category, block.text, block.html, table_box)
                    table_box = None
                blocks.append(block)
            continue
        block = _block(kind, token, tokens[i + 1] if i + 1 < len(tokens) else None, source, md)
        if block.category == "table" and table_box is not None:
            block = Block(block.category, block.text, block.html, table_box)
            table_box = None
        if block.box is None:
            missing += 1
        blocks.append(block)
    return ParsedPage(tuple(blocks), answer.strip(), 0, missing)


def _block(kind: str, token, inline, source: str, md) -> Block:
    if kind == "heading_open":
        return Block("title" if token.tag == "h1" else "heading", source)
    if kind in ("bullet_list_open", "ordered_list_open"):
        return Block("list", source)
    if kind == "table_open":
        return Block("table", source, md.render(source).strip())
    if kind in ("fence", "code_block"):
        info = (token.info or "").strip().lower()
        if info in ("math", "latex", "tex"):
            return Block("formula", source)
        return Block("code", source)
    if kind == "math_block":
        return Block("formula", source)
    if kind == "paragraph_open":
        if _IMAGE_ONLY.match(source):
            return Block("figure", source)
        if source.startswith(("$$", "\\[")):
            return Block("formula", source)
    return Block("paragraph", source)
