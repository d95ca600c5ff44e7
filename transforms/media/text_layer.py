"""A PDF page's text layer: whether it can stand in for OCR, how far OCR agrees with it, and
the decision per page (which rule, if any, saves the model call). Pure functions, no Beam.

- **Text-layer quality** (`text_layer_usable`, `text_layer_stats`, `clean_text_layer`): whether
  a page's text layer can replace OCR under `--text-layer-policy prefer`; the share of the page
  under raster images comes from `pdf_render.page_image_coverage`.
- **Agreement** (`text_layer_agreement`, `levenshtein`): 1 - character error rate between the
  OCR and the text layer, for `--text-layer-policy compare`.
- **The decision per page** (`decide_page`): blank pages (`blank_pages`), a usable text layer,
  or the model.

Thresholds are module constants, each with the reason for its value.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from vlbeam.schemas.config import TEXT_LAYER_POLICIES

# Names shared with the pages table and the summary
TEXT_SOURCE_MODEL = "model"  # the model read the page (`pages.text_source`)
TEXT_SOURCE_TEXT_LAYER = "text_layer"
TEXT_SOURCE_BLANK = "blank"
TEXT_SOURCES = (TEXT_SOURCE_MODEL, TEXT_SOURCE_TEXT_LAYER, TEXT_SOURCE_BLANK)

# pdfium's text extraction writes U+0002 where a word was hyphenated across a line break
# ("com\x02pile"); it is a marker, not a broken character.
PDFIUM_SOFT_HYPHEN = "\x02"

# ---------------------------------------------------------------------------------------------
# Text-layer quality

# A page whose raster images cover at least this fraction is treated as scanned: its text
# layer, if any, is someone's OCR (or a caption), not the page's own text.
MAX_IMAGE_COVERAGE = 0.5
# Of the non-whitespace characters, at least this share must be printable (not control,
# private-use, surrogate or unassigned code points; pdfium's soft-hyphen marker counts as
# printable). pdfium gives control and private-use characters for glyphs without a Unicode
# mapping (math fonts, broken subsets): 2 % of them means a font's text is lost.
MIN_PRINTABLE_RATIO = 0.98
# ... and at least this share letters or digits (a run of one repeated mark counted once):
# prose is ~0.9, tables of contents ~0.65, glyph soup from symbol fonts mapped to dingbats
# (a barcode in pdf.js's freeculture.pdf, "❚❘❙❚❘❙") under 0.3.
MIN_ALNUM_RATIO = 0.4
# Enough characters for the page's area: non-whitespace characters per "full page", the square
# on the page's long side (a letter page is 0.77 of it, A4 0.71). 150 on letter is about three
# lines of prose: fewer is a title or figure page whose words may be drawn as paths or images,
# where OCR is the safer reading.
MIN_CHARS_PER_SQUARE_PAGE = 200
# Any of these means glyphs without Unicode: pdfminer-style "(cid:12)" or U+FFFD.
_CID = re.compile(r"\(cid:\d+\)")
_REPLACEMENT = "\ufffd"
# A run of one punctuation mark repeated, spaced by single spaces or not: ". . . .", "____".
_LEADERS = re.compile(r"([^\w\s]|_)(?:[ \t]?\1)+")


@dataclass(frozen=True)
class TextLayerStats:
    chars: int  # non-whitespace characters
    printable_ratio: float
    alnum_ratio: float
    cid_glyphs: int
    replacement_chars: int


def _printable(ch: str) -> bool:
    return ch == PDFIUM_SOFT_HYPHEN or unicodedata.category(ch) not in ("Cc", "Co", "Cs", "Cn")


def text_layer_stats(text: str | None) -> TextLayerStats:
    """Counts over the non-whitespace characters; `alnum_ratio` with each run of one repeated
    punctuation mark (dot leaders, rules, form lines) counted as one character."""
    chars = [c for c in (text or "") if not c.isspace()]
    n = len(chars)
    collapsed = [c for c in _LEADERS.sub(r"\1", text or "") if not c.isspace()]
    return TextLayerStats(
        chars=n,
        printable_ratio=sum(map(_printable, chars)) / n if n else 0.0,
        alnum_ratio=sum(c.isalnum() for c in collapsed) / len(collapsed) if n else 0.0,
        cid_glyphs=len(_CID.findall(text or "")),
        replacement_chars=(text or "").count(_REPLACEMENT),
    )


def min_text_layer_chars(width_px: int, height_px: int) -> int:
    """Characters a text layer needs to count as covering a page of this shape."""
    long_side = max(width_px, height_px, 1)
    return round(MIN_CHARS_PER_SQUARE_PAGE * width_px * height_px / long_side**2)


def text_layer_usable(
    text: str | None, width_px: int, height_px: int, image_coverage: float | None
) -> tuple[bool, str]:
    """Whether a page's text layer can replace OCR, and why (`"ok"` or the first test failed):

    `no_text_layer`, `scanned_image` (raster images cover >= MAX_IMAGE_COVERAGE of the page;
    `image_coverage=None` means not measured and skips this test), `cid_glyphs`,
    `replacement_chars`, `unprintable` (printable share < MIN_PRINTABLE_RATIO), `few_letters`
    (letter/digit share < MIN_ALNUM_RATIO), `too_sparse` (fewer characters than
    `min_text_layer_chars` for the page's shape).
    """
    stats = text_layer_stats(text)
    if stats.chars == 0:
        return False, "no_text_layer"
    if image_coverage is not None and image_coverage >= MAX_IMAGE_COVERAGE:
        return False, "scanned_image"
    if stats.cid_glyphs:
        return False, "cid_glyphs"
    if stats.replacement_chars:
        return False, "replacement_chars"
    if stats.printable_ratio < MIN_PRINTABLE_RATIO:
        return False, "unprintable"
    if stats.alnum_ratio < MIN_ALNUM_RATIO:
        return False, "few_letters"
    if stats.chars < min_text_layer_chars(width_px, height_px):
        return False, "too_sparse"
    return True, "ok"


def clean_text_layer(text: str) -> str:
    """The text layer as a pages row's `text`: hyphenation markers joined, NFC, other control
    and private-use characters dropped, trailing spaces trimmed."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace(PDFIUM_SOFT_HYPHEN, ""))
    kept = "".join(c for c in text if c in "\n\t" or _printable(c))
    return "\n".join(line.rstrip() for line in kept.split("\n")).strip()


# ---------------------------------------------------------------------------------------------
# Agreement between OCR and the text layer

_HYPHEN_BREAK = re.compile(r"(?<=\w)-[ \t]*\n\s*(?=\w)")


def normalize_for_comparison(text: str) -> str:
    """NFC, words hyphenated across a line break joined (pdfium's U+0002 marker, or "-" then
    a newline in OCR output), every whitespace run one space, ends stripped."""
    text = unicodedata.normalize("NFC", text.replace(PDFIUM_SOFT_HYPHEN, ""))
    text = _HYPHEN_BREAK.sub("", text)
    return " ".join(text.split())


def levenshtein(a: str, b: str) -> int:
    """Exact edit distance (insertions, deletions, substitutions all cost 1).

    Myers' bit-parallel algorithm (in Hyyrö's formulation for global distance) on Python's big
    integers: one pass over the longer string with bit vectors as long as the shorter one, so
    two 5,000-character pages take milliseconds, not the seconds of a plain DP table.
    """
    if len(a) < len(b):
        a, b = b, a  # b is the shorter: it becomes the bit vectors
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    full = (1 << m) - 1
    high = 1 << (m - 1)
    vp, vn, dist = full, 0, m
    for ch in a:
        x = peq.get(ch, 0)
        d0 = ((((x & vp) + vp) ^ vp) | x | vn) & full
        hp = vn | (~(d0 | vp) & full)
        hn = d0 & vp
        if hp & high:
            dist += 1
        elif hn & high:
            dist -= 1
        hp = ((hp << 1) | 1) & full
        hn = (hn << 1) & full
        vp = hn | (~(d0 | hp) & full)
        vn = hp & d0
    return dist


def text_layer_agreement(ocr: str, text_layer: str) -> float:
    """1 - CER of the OCR against the text layer (the reference), after
    `normalize_for_comparison`; CER = Levenshtein distance / reference length; in [0, 1].
    Two empty texts agree fully; an empty reference against any OCR text scores 0."""
    hyp, ref = normalize_for_comparison(ocr), normalize_for_comparison(text_layer)
    if not ref:
        return 1.0 if not hyp else 0.0
    if abs(len(hyp) - len(ref)) >= len(ref):  # the distance is at least the length gap
        return 0.0
    return max(0.0, 1.0 - levenshtein(hyp, ref) / len(ref))


# ---------------------------------------------------------------------------------------------
# The decision for one page


@dataclass(frozen=True)
class PageDecision:
    """What to do with a page before any model call.

    `text_source`: what its `text` will come from; `call_model`: whether the model runs;
    `rule`: why (`blank`, `text_layer`, `policy_ocr`, or the text-layer test that failed);
    `compare`: record `text_layer_agreement` after OCR (policy compare, text layer present).
    """

    text_source: str
    call_model: bool
    rule: str
    compare: bool = False


def decide_page(
    policy: str,
    *,
    blank: bool,
    text_layer: str | None,
    width_px: int,
    height_px: int,
    image_coverage: float | None,
) -> PageDecision:
    """Blank pages skip the model under every policy; `prefer` uses a usable text layer;
    `compare` OCRs every other page and compares where a text layer exists; `ocr` OCRs."""
    if policy not in TEXT_LAYER_POLICIES:
        raise ValueError(f"text layer policy must be one of {TEXT_LAYER_POLICIES}, got {policy!r}")
    if blank:
        return PageDecision(TEXT_SOURCE_BLANK, call_model=False, rule="blank")
    if policy == "prefer":
        usable, reason = text_layer_usable(text_layer, width_px, height_px, image_coverage)
        if usable:
            return PageDecision(TEXT_SOURCE_TEXT_LAYER, call_model=False, rule="text_layer")
        return PageDecision(TEXT_SOURCE_MODEL, call_model=True, rule=reason)
    has_layer = bool(text_layer and not text_layer.isspace())
    return PageDecision(
        TEXT_SOURCE_MODEL,
        call_model=True,
        rule="policy_" + policy,
        compare=policy == "compare" and has_layer,
    )
