"""A model's HTML answer as a small element tree, built on the standard library's HTML parser.

Why not a tree library: no HTML tree parser (lxml, html5lib, selectolax, BeautifulSoup) is in
vlbeam's pinned set, and one would add a compiled dependency to every worker for answers of a
few kilobytes. `html.parser.HTMLParser` is the standard library's real HTML tokenizer (entities,
attributes, comments, CDATA-ish `<script>`/`<style>`, broken markup); what it doesn't do is build
a tree, which is the small part written here with HTML's own rules for what models get wrong:

- void elements (`<br>`, `<img>`, `<hr>`, `<input>`) never hold children;
- an unclosed `<p>`, `<li>`, `<td>`/`<th>`, `<tr>`, `<thead>`/`<tbody>` is closed by the next
  element that can't sit inside it (HTML's implied end tags), and by the end of the answer;
- an end tag with no open element of its name is ignored; one that matches an element further
  up closes everything opened inside it;
- text outside any element stays, as text children of the root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
# Elements that close an open <p> when they start (HTML's "close a p element" rule).
_CLOSES_P = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "div",
        "dl",
        "fieldset",
        "figure",
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
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "ul",
    ]
)
# start tag -> (the open element it implicitly closes, with everything opened inside it;
# the elements the search stops at)
_IMPLIED = {
    "li": ({"li"}, {"ul", "ol"}),
    "dt": ({"dt", "dd"}, {"dl"}),
    "dd": ({"dt", "dd"}, {"dl"}),
    "tr": ({"tr"}, {"table", "thead", "tbody", "tfoot"}),
    "td": ({"td", "th"}, {"tr", "table"}),
    "th": ({"td", "th"}, {"tr", "table"}),
    "thead": ({"thead", "tbody", "tfoot"}, {"table"}),
    "tbody": ({"thead", "tbody", "tfoot"}, {"table"}),
    "tfoot": ({"thead", "tbody", "tfoot"}, {"table"}),
}


@dataclass
class Element:
    """One element: its tag (lower case), attributes, and children (elements and strings)."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Element | str] = field(default_factory=list)

    def elements(self) -> list[Element]:
        return [c for c in self.children if isinstance(c, Element)]

    def iter(self, *tags: str):
        """This element and every element below it (document order), or those of `tags`."""
        stack: list[Element] = [self]
        while stack:
            node = stack.pop()
            if not tags or node.tag in tags:
                yield node
            stack.extend(reversed(node.elements()))

    def text(self) -> str:
        """All the text below this element, as it stands (`<br>` as a newline)."""
        parts: list[str] = []
        stack: list[Element | str] = [self]
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                parts.append(node)
            elif node.tag == "br":
                parts.append("\n")
            else:
                stack.extend(reversed(node.children))
        return "".join(parts)

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").lower().split()

    def to_html(self) -> str:
        """The element serialised back to HTML (attributes and text escaped)."""
        from html import escape

        parts: list[str] = []

        def emit(node: Element | str) -> None:
            if isinstance(node, str):
                parts.append(escape(node, quote=False))
                return
            attrs = "".join(
                f' {k}="{escape(v)}"' if v != "" else f" {k}" for k, v in node.attrs.items()
            )
            parts.append(f"<{node.tag}{attrs}>")
            if node.tag in VOID:
                return
            for child in node.children:
                emit(child)
            parts.append(f"</{node.tag}>")

        emit(self)
        return "".join(parts)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root")
        self.open: list[Element] = [self.root]

    def _close_to(self, index: int) -> None:
        del self.open[index:]

    def _implied_close(self, tag: str) -> None:
        if tag in _CLOSES_P:
            for i in range(len(self.open) - 1, 0, -1):
                name = self.open[i].tag
                if name == "p":
                    self._close_to(i)
                    break
                if name in ("div", "td", "th", "li", "table", "body", "html", "blockquote"):
                    break
        if tag in _IMPLIED:
            closes, boundary = _IMPLIED[tag]
            for i in range(len(self.open) - 1, 0, -1):
                name = self.open[i].tag
                if name in boundary:
                    break
                if name in closes:
                    self._close_to(i)
                    break

    def handle_starttag(self, tag: str, attrs) -> None:
        self._implied_close(tag)
        element = Element(tag, {k.lower(): (v if v is not None else "") for k, v in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs) -> None:
        self._implied_close(tag)
        element = Element(tag, {k.lower(): (v if v is not None else "") for k, v in attrs})
        self.open[-1].children.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, 0, -1):
            if self.open[i].tag == tag:
                self._close_to(i)
                return
        # an end tag nothing opened: ignored

    def handle_data(self, data: str) -> None:
        if not data:
            return
        children = self.open[-1].children
        if children and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)


def parse_html(text: str) -> Element:
    """The tree of `text` under a `#root` element; never raises on malformed markup."""
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root
