"""A model's HTML answer as a small element tree (the standard library's `html.parser`, a real,
tolerant HTML tokenizer) and that tree as Markdown.

Why hand-written: no HTML-to-Markdown library is in the pinned stack (markdownify, html2text,
BeautifulSoup are not), and the markup OCR models are told to use is small (Chandra's prompt
lists its 36 tags). Tables are kept as HTML in the Markdown (lossless: colspan/rowspan stay; a
Markdown renderer shows them), as Chandra's and Nanonets' own outputs do. `html_tree` /
`html_markdown` (issue #21) do the same for QwenVL HTML, with tables as Markdown tables and
a different element model; folding the two into one is left for a follow-up.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = frozenset({"br", "img", "hr", "input", "meta", "link", "col", "wbr"})
# an open element of one of these closes when a sibling of the same kind opens
_SELF_CLOSING_SIBLINGS = frozenset({"p", "li", "tr", "td", "th"})
_BLOCK = frozenset({"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "pre",
                    "blockquote", "hr", "caption"})  # fmt: skip


@dataclass
class Element:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Element | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def elements(self) -> list[Element]:
        return [c for c in self.children if isinstance(c, Element)]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root")
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        if tag in _SELF_CLOSING_SIBLINGS and self.stack[-1].tag == tag:
            self.stack.pop()
        node = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):  # close up to the matching element
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return
        # a stray end tag: ignored

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Element:
    """`text` as a tree under a `#root` element; unclosed elements are closed at the end."""
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def to_html(node: Element | str) -> str:
    """The element serialized back (attributes and text escaped)."""
    if isinstance(node, str):
        return html.escape(node, quote=False)
    attrs = "".join(f' {k}="{html.escape(v)}"' for k, v in node.attrs.items())
    if node.tag in VOID:
        return f"<{node.tag}{attrs}>"
    inner = "".join(to_html(c) for c in node.children)
    return inner if node.tag == "#root" else f"<{node.tag}{attrs}>{inner}</{node.tag}>"


def _inline(node: Element | str) -> str:
    if isinstance(node, str):  # whitespace collapsed, a space kept at either end
        if not node.strip():
            return " " if node else ""
        lead = " " if node[0].isspace() else ""
        trail = " " if node[-1].isspace() else ""
        return lead + " ".join(node.split()) + trail
    tag, inner = node.tag, "".join(_inline(c) for c in node.children)
    if tag == "br":
        return "\n"
    if tag in ("b", "strong") and inner.strip():
        return f"**{inner.strip()}**"
    if tag in ("i", "em") and inner.strip():
        return f"*{inner.strip()}*"
    if tag == "del" and inner.strip():
        return f"~~{inner.strip()}~~"
    if tag in ("sup", "sub", "u", "small", "big") and inner.strip():
        return f"<{tag}>{inner.strip()}</{tag}>"
    if tag == "code":
        return f"`{node.text()}`"
    if tag == "math":
        latex = node.text().strip()
        return f"$${latex}$$" if "display" in node.attrs else f"${latex}$"
    if tag == "img":
        return f"![{node.attrs.get('alt', '').strip()}]()"
    if tag == "input" and node.attrs.get("type") in ("checkbox", "radio"):
        return "☑" if "checked" in node.attrs else "☐"
    if tag == "a" and node.attrs.get("href"):
        return f"[{inner.strip()}]({node.attrs['href']})"
    if tag == "table":
        return to_html(node)
    return inner


def to_markdown(node: Element, depth: int = 0) -> str:
    """Block-level Markdown of `node`'s children: paragraphs, headings, lists, tables (kept as
    HTML), code, display math; inline markup within them."""
    out: list[str] = []
    line: list[str] = []

    def flush() -> None:
        text = "".join(line).strip()
        line.clear()
        if text:
            out.append("\n".join(part.strip() for part in text.split("\n")))

    for child in node.children:
        if isinstance(child, str) or child.tag not in _BLOCK | {"li", "ul", "ol"}:
            line.append(_inline(child))
            continue
        flush()
        tag = child.tag
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            out.append("#" * int(tag[1]) + " " + " ".join(_inline(child).split()))
        elif tag in ("ul", "ol"):
            items = [c for c in child.elements() if c.tag == "li"]
            lines = []
            for n, item in enumerate(items, 1):
                marker = f"{n}." if tag == "ol" else "-"
                body = to_markdown(item, depth + 1).replace("\n\n", "\n")
                pad = "  " * depth
                lines.append(pad + marker + " " + body.replace("\n", "\n" + pad + "  "))
            out.append("\n".join(lines))
        elif tag == "table":
            out.append(to_html(child))
        elif tag == "pre":
            out.append("```\n" + child.text().strip("\n") + "\n```")
        elif tag == "hr":
            out.append("---")
        else:  # p, div, blockquote, caption, li
            inner = to_markdown(child, depth)
            if inner:
                out.append(inner)
    flush()
    return "\n\n".join(out)
