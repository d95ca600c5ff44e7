"""A page's answer read in its model's format (`ModelPreset.answer_format`): the text for
`pages.text`, olmOCR's metadata for `pages.page_meta`, layout blocks. Pure.

A parse failure never loses the answer: the raw text is kept as the page's text and the page
is flagged `unparsed` (quality_flags), with the reason in `error`.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlbeam.transforms.answers.chandra_html import ChandraFormatError, parse_chandra
from vlbeam.transforms.answers.degenerate import FLAG_UNPARSED
from vlbeam.transforms.answers.nanonets_tags import parse_nanonets
from vlbeam.transforms.answers.olmocr_front_matter import FrontMatterError, parse_olmocr
from vlbeam.transforms.answers.preset_blocks import Block

__all__ = ["FLAG_UNPARSED", "ParsedAnswer", "needs_rotation", "parse_answer"]


@dataclass(frozen=True)
class ParsedAnswer:
    text: str | None
    page_meta: dict | None = None  # olmOCR's five front-matter fields (+ rotation, added later)
    blocks: tuple[Block, ...] = ()
    error: str | None = None  # why the answer could not be read (then `text` is the raw answer)

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_answer(answer_format: str, text: str | None, grid: float = 1000.0) -> ParsedAnswer:
    """`text` read as `answer_format` (schemas/presets.ANSWER_FORMATS)."""
    if answer_format == "markdown" or text is None:
        return ParsedAnswer(text)
    try:
        if answer_format == "olmocr-yaml":
            page = parse_olmocr(text)
            return ParsedAnswer(page.text, page.meta())
        if answer_format == "chandra-html":
            markdown, blocks = parse_chandra(text, grid)
            return ParsedAnswer(markdown, None, tuple(blocks))
        if answer_format == "nanonets-tags":
            markdown, blocks = parse_nanonets(text)
            return ParsedAnswer(markdown, None, tuple(blocks))
    except (FrontMatterError, ChandraFormatError) as exc:
        return ParsedAnswer(text, error=str(exc))
    raise ValueError(f"unknown answer format {answer_format!r}")


def needs_rotation(answer_format: str, text: str | None) -> int | None:
    """olmOCR: the rotation (degrees, counter-clockwise) to re-send the page at when the answer
    says the page is not upright (`is_rotation_valid: false`); None otherwise (also when the
    answer can't be read: that is a parse failure, not a rotation)."""
    if answer_format != "olmocr-yaml" or not text:
        return None
    try:
        page = parse_olmocr(text)
    except FrontMatterError:
        return None
    return None if page.is_rotation_valid else page.rotation_correction % 360
