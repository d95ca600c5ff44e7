"""Nanonets-OCR2's answers: markdown with semantic tags, read into Markdown and layout blocks.

Format (Nanonets-OCR2-3B model card, feature list, as copied verbatim by a third party; the
prompt is the same in `allenai/olmocr` @ f7cfe4c `olmocr/bench/runners/run_nanonetsocr_2.py`):
`<img>description or caption</img>`, `<signature>…</signature>`,
`<watermark>…</watermark>`, `<page_number>…</page_number>`, tables as HTML `<table>`,
equations as LaTeX (`$…$`, `$$…$$`), check boxes as ☐ ☑ ☒, flow charts as mermaid.

In the Markdown: `<img>X</img>` becomes `![X]()`, a signature its text; page numbers and
watermarks are left out (page furniture, as Chandra's headers/footers) and kept as blocks;
tables stay HTML. Tag → category: img → figure, page_number → page_number, watermark → other,
signature → other, `<table>` → table, `$$…$$` → formula, `#` lines → heading (`# ` title),
list lines → list, ``` fences → code, the rest → paragraph.
"""

from __future__ import annotations

import re

from vlbeam.transforms.answers.preset_blocks import Block

_TAG = re.compile(r"<(img|signature|watermark|page_number)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_TABLE = re.compile(r"<table\b.*?</table>", re.DOTALL | re.IGNORECASE)
_LIST_LINE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_MERMAID = re.compile(r"^```mermaid\b", re.IGNORECASE)


def _paragraph_block(chunk: str) -> Block:
    first = chunk.lstrip()
    if first.startswith("```"):
        return Block("figure" if _MERMAID.match(first) else "code", chunk)
    if first.startswith("$$"):
        return Block("formula", chunk, html=None)
    if first.startswith("# "):
        return Block("title", first[2:].strip())
    if re.match(r"^#{2,6}\s", first):
        return Block("heading", first.lstrip("#").strip())
    if all(_LIST_LINE.match(line) or not line.strip() for line in chunk.splitlines()):
        return Block("list", chunk)
    return Block("paragraph", chunk)


def _chunks(text: str):
    """Blank-line-separated chunks, with ``` fences and <table>s kept whole."""
    pieces = re.split(r"(```.*?```|<table\b.*?</table>)", text, flags=re.DOTALL | re.IGNORECASE)
    for piece in pieces:
        if piece.startswith("```") or piece.lower().startswith("<table"):
            yield piece
        else:
            yield from (c.strip("\n") for c in re.split(r"\n\s*\n", piece) if c.strip())


def parse_nanonets(answer: str) -> tuple[str, list[Block]]:
    """(Markdown, blocks) of a Nanonets-OCR2 answer. Never fails: plain markdown is read as
    markdown (an unclosed tag stays text)."""
    blocks: list[Block] = []
    out: list[str] = []
    for chunk in _chunks(answer):
        if _TABLE.fullmatch(chunk.strip()):
            blocks.append(Block("table", chunk.strip(), html=chunk.strip()))
            out.append(chunk.strip())
            continue
        kept = []
        position = 0
        for match in _TAG.finditer(chunk):
            kept.append(chunk[position : match.start()])
            tag, inner = match.group(1).lower(), " ".join(match.group(2).split())
            position = match.end()
            if tag == "img":
                blocks.append(Block("figure", inner))
                kept.append(f"![{inner}]()")
            elif tag == "page_number":
                blocks.append(Block("page_number", inner))
            elif tag == "watermark":
                blocks.append(Block("other", inner))
            else:
                blocks.append(Block("other", inner))
                kept.append(inner)
        kept.append(chunk[position:])
        rest = "".join(kept).strip()
        only_tags = not _TAG.sub("", chunk).strip()
        if rest and not (only_tags and rest.startswith("![")):
            blocks.append(_paragraph_block(rest))
        if rest:
            out.append(rest)
    return "\n\n".join(out), blocks
