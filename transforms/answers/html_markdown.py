"""HTML (a parsed `html_tree` element) → Markdown, for `pages.text` under `--ocr-format html`.

Written here rather than taken from a library: markdown-it-py goes the other way (Markdown →
HTML), and no HTML → Markdown converter (markdownify, html2text) is in vlbeam's pinned set. The
answers are a model's small, regular HTML (headings, paragraphs, lists, tables, formulas, a few
inline tags), so a converter over the tree is short: block elements become Markdown blocks
separated by a blank line, tables become pipe tables (rowspan/colspan expanded, see `tables`),
formulas `$$ … $$`, inline `<b>`/`<i>`/`<code>`/`<a>` their Markdown forms, anything else its
text. The model's own line breaks inside a block are kept (they are the page's lines).
"""

from __future__ import annotations

import re

from vlbeam.transforms.answers.html_inline import BLOCK_TAGS, inline_markdown
from vlbeam.transforms.answers.html_tree import Element
from vlbeam.transforms.answers.tables import table_grid

HEADINGS = {f"h{n}": n for n in range(1, 7)}
_PIPE = re.compile(r"(?<!\\)\|")


def formula_markdown(latex: str) -> str:
    """A display formula as Markdown: `$$ … $$`, unless the model already delimited it."""
    latex = latex.strip()
    if not latex or latex.startswith(("$$", "\\[", "\\begin{")):
        return latex
    return f"$$\n{latex.strip('$').strip()}\n$$"


def table_markdown(table: Element) -> str:
    """A pipe table (GFM): the header row, or the first row when the table has none."""
    grid = table_grid(table)
    if grid.n_cols == 0:
        return ""
    header, rows = list(grid.header), [list(r) for r in grid.rows]
    if not header:
        header, rows = rows[0], rows[1:]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(_PIPE.sub(r"\\|", c.replace("\n", " ")) for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * grid.n_cols, *(line(r) for r in rows)])


def block_markdown(node: Element, depth: int = 0) -> str:
    """The Markdown of one block element (and the blocks inside it)."""
    tag = node.tag
    if tag in HEADINGS:
        text = inline_markdown(node).replace("\n", " ")
        return f"{'#' * HEADINGS[tag]} {text}" if text else ""
    if tag == "table":
        return table_markdown(node)
    if tag in ("ul", "ol"):
        return _list_markdown(node, ordered=tag == "ol", depth=depth)
    if tag == "pre":
        code = node.text().strip("\n")
        return f"```\n{code}\n```" if code.strip() else ""
    if tag == "hr":
        return "---"
    if tag == "blockquote":
        inner = children_markdown(node, depth)
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
    if tag == "math":
        return formula_markdown(node.text())
    if any(isinstance(c, Element) and c.tag in BLOCK_TAGS - {"img", "math"} for c in node.children):
        return children_markdown(node, depth)
    return inline_markdown(node)


def children_markdown(node: Element, depth: int = 0) -> str:
    """The blocks under `node`, a blank line between them; loose text and inline elements
    between blocks are gathered into paragraphs."""
    parts: list[str] = []
    loose: list[Element | str] = []

    def flush() -> None:
        if loose:
            text = inline_markdown(Element("span", children=list(loose)))
            if text:
                parts.append(text)
            loose.clear()

    for child in node.children:
        if isinstance(child, str) or child.tag not in BLOCK_TAGS or child.tag == "img":
            loose.append(child)
            continue
        flush()
        text = block_markdown(child, depth)
        if text:
            parts.append(text)
    flush()
    return "\n\n".join(parts)


def _list_markdown(node: Element, *, ordered: bool, depth: int) -> str:
    lines: list[str] = []
    indent = "   " * depth if ordered else "  " * depth
    number = int(node.attrs.get("start", "1")) if node.attrs.get("start", "1").isdigit() else 1
    for item in node.elements():
        if item.tag != "li":
            continue
        nested = [c for c in item.elements() if c.tag in ("ul", "ol")]
        own = Element("li", children=[c for c in item.children if all(c is not n for n in nested)])
        text = inline_markdown(own).replace("\n", " ")
        marker = f"{number}." if ordered else "-"
        number += 1
        lines.append(f"{indent}{marker} {text}".rstrip())
        for sub in nested:
            lines.append(_list_markdown(sub, ordered=sub.tag == "ol", depth=depth + 1))
    return "\n".join(line for line in lines if line.strip())
