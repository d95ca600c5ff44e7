"""Inline HTML (a parsed `html_tree` element) → Markdown: the text of a paragraph, a heading or
a table cell. Whitespace runs become one space; the model's line breaks are kept. (Hand-written
for the reason given in `html_markdown`.)"""

from __future__ import annotations

import re

from vlbeam.transforms.answers.html_tree import Element

BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "dd",
        "div",
        "dl",
        "dt",
        "figure",
        "figcaption",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "html",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
        "caption",
        "img",
        "math",
    ]
)
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def inline_markdown(node: Element | str) -> str:
    """The Markdown of inline content: whitespace runs one space, line breaks kept."""
    out = _inline(node)
    lines = [_SPACES.sub(" ", line).strip() for line in out.split("\n")]
    return "\n".join(line for line in lines if line)


def paragraphs_markdown(nodes: list[Element | str]) -> list[str]:
    """Loose text and inline elements as paragraphs: one per blank-line-separated chunk."""
    raw = "".join(_inline(n) for n in nodes)
    chunks = (inline_markdown(chunk) for chunk in _BLANK_LINE.split(raw))
    return [c for c in chunks if c]


def _inline(node: Element | str) -> str:
    if isinstance(node, str):
        return node
    tag = node.tag
    if tag == "br":
        return "\n"
    if tag == "img":
        alt = node.attrs.get("alt", "").strip()
        return f"![{alt}]()" if alt else ""
    inner = "".join(_inline(c) for c in node.children)
    if tag in ("b", "strong") and inner.strip():
        return f"**{inner.strip()}**"
    if tag in ("i", "em") and inner.strip():
        return f"*{inner.strip()}*"
    if tag == "code" and inner.strip():
        return f"`{inner.strip()}`"
    if tag in ("sup", "sub") and inner.strip():
        return f"<{tag}>{inner.strip()}</{tag}>"
    if tag == "a" and node.attrs.get("href") and inner.strip():
        return f"[{inner.strip()}]({node.attrs['href']})"
    if tag == "math":
        latex = inner.strip()
        if not latex:
            return ""
        return f"$${latex}$$" if "display" in node.attrs else f"${latex}$"
    if tag in BLOCK_TAGS:  # a block inside inline content: its own line
        return "\n" + inner + "\n"
    return inner
