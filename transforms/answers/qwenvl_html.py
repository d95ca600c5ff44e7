"""QwenVL HTML answers → layout blocks and the page's Markdown.

The format (Qwen3-VL cookbook `cookbooks/document_parsing.ipynb`, prompt `qwenvl html`; read in
the fork Firefly-llm/Qwen3-VL@6810c424 since the upstream blob at a446e86 is too large for the
snapshot, see /work/notes/presets.md §4): an `<html><body>` of elements each carrying
`data-bbox="x0 y0 x1 y1"` on Qwen3-VL's 0-1000 grid, e.g.

    <html><body><div class="image" data-bbox="104 29 455 75"></div>
    <div class="text" data-bbox="91 101 346 127">宇通客车 (600066)</div>
    <div class="table" data-bbox="108 298 386 446"><table><tr><td>行业</td>...</table></div>
    </body></html>

with `h1`-`h6`, `p`, `ol`/`li` (the Qwen2.5-VL examples), classes `text`, `image`, `table`,
`formula` (+ `machine_printed`/`handwritten`), `image caption`, `chart`, `music sheet`,
`chemical formula` (the cookbook's `clean_and_format_html`). Chandra-style `data-label`s
(Page-Header, Section-Header, Equation-Block, ...) are read too.

Tolerated: a code fence around the answer (and prose outside it), unclosed tags and text
outside any element (`html_tree`), missing, malformed and off-grid boxes (`blocks.parse_box`:
the block stays, without a box, and is counted).
"""

from __future__ import annotations

from vlbeam.transforms.answers.blocks import Block, ParsedPage, parse_box, union_box
from vlbeam.transforms.answers.html_inline import (
    BLOCK_TAGS,
    inline_markdown,
    paragraphs_markdown,
)
from vlbeam.transforms.answers.html_markdown import block_markdown, formula_markdown
from vlbeam.transforms.answers.html_tree import Element, parse_html

# data-label / class word → category (lower case, '-' and ' ' as '_')
_LABELS = {
    "title": "title", "doc_title": "title", "document_title": "title",
    "heading": "heading", "section_header": "heading", "section_heading": "heading",
    "subtitle": "heading",
    "text": "paragraph", "paragraph": "paragraph", "plain_text": "paragraph",
    "abstract": "paragraph", "reference": "paragraph",
    "list": "list", "list_group": "list", "list_item": "list",
    "table": "table", "table_of_contents": "table",
    "image": "figure", "figure": "figure", "chart": "figure", "picture": "figure",
    "diagram": "figure", "photo": "figure", "seal": "figure", "qrcode": "figure",
    "barcode": "figure",
    "formula": "formula", "equation": "formula", "equation_block": "formula",
    "chemical_formula": "formula",
    "caption": "caption", "image_caption": "caption", "table_caption": "caption",
    "figure_caption": "caption",
    "header": "header", "page_header": "header",
    "footer": "footer", "page_footer": "footer",
    "footnote": "footnote",
    "page_number": "page_number", "pagenumber": "page_number", "number": "page_number",
    "code": "code", "code_block": "code", "algorithm": "code",
    "music_sheet": "other", "form": "other", "complex_block": "other", "handwriting": "paragraph",
}  # fmt: skip
_TAGS = {
    "h1": "title", "h2": "heading", "h3": "heading", "h4": "heading", "h5": "heading",
    "h6": "heading", "p": "paragraph", "ul": "list", "ol": "list", "table": "table",
    "img": "figure", "figure": "figure", "math": "formula", "pre": "code",
    "header": "header", "footer": "footer", "caption": "caption", "figcaption": "caption",
    "blockquote": "paragraph", "address": "paragraph",
}  # fmt: skip
# wrappers to look inside when they carry no box and no label of their own
_CONTAINERS = frozenset({"html", "body", "div", "section", "article", "main", "span"})
_SKIP = frozenset({"head", "script", "style", "meta", "link", "title"})


def strip_code_fence(answer: str) -> str:
    """The answer inside its first code fence (```html … ```), or the answer as it is.
    An unclosed fence runs to the end."""
    start = answer.find("```")
    if start < 0:
        return answer
    body_start = answer.find("\n", start)
    if body_start < 0:
        return ""
    end = answer.find("```", body_start)
    return answer[body_start + 1 : end if end >= 0 else len(answer)]


def _key(value: str) -> str:
    return value.strip().lower().replace("-", "_").replace(" ", "_")


def category_of(element: Element) -> str:
    """The block category of an element: its `data-label`, then its class (whole, then by
    word; `caption` wins, so `image caption` is a caption), then its tag."""
    label = element.attrs.get("data-label") or element.attrs.get("data-category")
    if label and _key(label) in _LABELS:
        return _LABELS[_key(label)]
    cls = element.attrs.get("class", "")
    if cls:
        if _key(cls) in _LABELS:
            return _LABELS[_key(cls)]
        words = [_key(w) for w in cls.split()]
        if "caption" in words:
            return "caption"
        for word in words:
            if word in _LABELS:
                return _LABELS[word]
    if element.tag in _TAGS:
        return _TAGS[element.tag]
    inner = [c for c in element.elements() if c.tag not in ("br", "span", "b", "i", "strong")]
    if len(inner) == 1 and inner[0].tag in _TAGS:  # <div data-bbox><table>…</table></div>
        return _TAGS[inner[0].tag]
    if element.tag in ("div", "span", "section"):
        return "paragraph"
    return "other"


def _box_value(element: Element) -> str | None:
    for attr in ("data-bbox", "data-polygon", "bbox"):
        if attr in element.attrs:
            return element.attrs[attr]
    return None


def _is_wrapper(element: Element) -> bool:
    """A box-less, label-less container whose content is blocks: read through it."""
    if element.tag in ("html", "body"):
        return True
    if element.tag not in _CONTAINERS or _box_value(element) is not None:
        return False
    if element.attrs.get("class") or element.attrs.get("data-label"):
        return False
    return any(c.tag in BLOCK_TAGS or _box_value(c) is not None for c in element.elements())


class _Reader:
    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.bad_boxes = 0
        self.missing_boxes = 0

    def read(self, node: Element) -> None:
        loose: list[Element | str] = []
        for child in node.children:
            if isinstance(child, str):
                if child.strip():
                    loose.append(child)
                continue
            if child.tag in _SKIP:
                continue
            if _is_wrapper(child):
                self._loose(loose)
                self.read(child)
            elif child.tag not in BLOCK_TAGS and _box_value(child) is None:
                loose.append(child)  # inline markup outside any block
            else:
                self._loose(loose)
                self._block(child)
        self._loose(loose)

    def _loose(self, loose: list[Element | str]) -> None:
        """Text outside any element: a paragraph without a box."""
        for text in paragraphs_markdown(loose):
            self.blocks.append(Block("paragraph", text))
            self.missing_boxes += 1
        loose.clear()

    def _block(self, element: Element) -> None:
        category = category_of(element)
        box, why = parse_box(_box_value(element))
        if box is None and why == "missing":
            # a list's box is its items' (the cookbook draws <li> boxes, not <ol>'s); a figure
            # div may carry its box on its <img>
            inner = [parse_box(_box_value(e))[0] for e in element.iter() if e is not element]
            box = union_box(inner)
        if box is None:
            if why == "missing":
                self.missing_boxes += 1
            else:
                self.bad_boxes += 1
        text, html = _content(element, category)
        if not text and category not in ("figure", "table"):
            return
        self.blocks.append(Block(category, text, html, box))


def _content(element: Element, category: str) -> tuple[str, str | None]:
    """(Markdown, html) of a block."""
    if category == "table":
        table = next(element.iter("table"), None)
        if table is None:
            return inline_markdown(element), None
        return block_markdown(table), table.to_html()
    if category == "formula":
        return formula_markdown(element.text()), element.to_html()
    if category == "figure":
        alts = [i.attrs.get("alt", "").strip() for i in element.iter("img")]
        described = " ".join(a for a in alts if a) or inline_markdown(element)
        return (f"![{described}]()" if described else ""), None
    if category in ("title", "heading"):
        text = inline_markdown(element).replace("\n", " ")
        level = (
            int(element.tag[1])
            if element.tag in ("h1", "h2", "h3", "h4", "h5", "h6")
            else (1 if category == "title" else 2)
        )
        return (f"{'#' * level} {text}" if text else ""), None
    if category == "code" and element.tag != "pre":
        code = element.text().strip("\n")
        return (f"```\n{code}\n```" if code.strip() else ""), None
    return block_markdown(element), None


def parse_qwenvl_html(answer: str | None) -> ParsedPage:
    """A QwenVL HTML answer → its blocks in reading order and the page's Markdown (the
    blocks' Markdown, a blank line between). Never raises: an answer with no markup at all
    is one paragraph per blank-line-separated chunk, without boxes."""
    if not answer or not answer.strip():
        return ParsedPage((), "")
    reader = _Reader()
    reader.read(parse_html(strip_code_fence(answer)))
    blocks = tuple(reader.blocks)
    markdown = "\n\n".join(b.text for b in blocks if b.text)
    return ParsedPage(blocks, markdown, reader.bad_boxes, reader.missing_boxes)
