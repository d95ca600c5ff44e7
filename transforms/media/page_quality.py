"""Where a page needs the model, and what the model got wrong (issue #15). Pure functions.

- **Blank pages** (`is_blank`, `measure_blank`): a near-uniform render with no text-layer
  characters. Ink is measured against the page's own local background, so off-white and dark
  pages, scanner noise and JPEG grain don't count, while one short line of small or faint text
  does.
- **Text-layer quality** (`text_layer_usable`, `text_layer_stats`, `image_coverage`): whether a
  PDF page's text layer can stand in for OCR under `--text-layer-policy prefer`.
- **Agreement** (`text_layer_agreement`, `levenshtein`): 1 - character error rate between the
  OCR and the text layer, for `--text-layer-policy compare`.
- **Degenerate answers** (`quality_flags`, `find_repetition`): `repetition`, `length`, `empty`.
- **Retries** (`retry_temperature`, `Answer`, `better_answer`): for `--retry-degenerate N`.
- **The decision per page** (`decide_page`): which rule, if any, saves the model call.

No Beam, no model: numpy, Pillow and (for `image_coverage`) pypdfium2 only. Thresholds are
module constants, each with the reason for its value.
"""

from __future__ import annotations

import io
import itertools
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vlbeam.schemas.config import TEXT_LAYER_POLICIES

if TYPE_CHECKING:
    from PIL import Image

# ---------------------------------------------------------------------------------------------
# Names shared with the pages table and the summary

TEXT_SOURCE_MODEL = "model"  # the model read the page (`pages.text_source`)
TEXT_SOURCE_TEXT_LAYER = "text_layer"
TEXT_SOURCE_BLANK = "blank"
TEXT_SOURCES = (TEXT_SOURCE_MODEL, TEXT_SOURCE_TEXT_LAYER, TEXT_SOURCE_BLANK)


FLAG_REPETITION = "repetition"
FLAG_LENGTH = "length"
FLAG_EMPTY = "empty"
QUALITY_FLAGS = (FLAG_REPETITION, FLAG_LENGTH, FLAG_EMPTY)  # the order flags are listed in

# pdfium's text extraction writes U+0002 where a word was hyphenated across a line break
# ("com\x02pile"); it is a marker, not a broken character.
PDFIUM_SOFT_HYPHEN = "\x02"

# ---------------------------------------------------------------------------------------------
# Blank pages

# Resolution the pixel constants below are stated at: vlbeam's default --target-long-side.
REFERENCE_LONG_SIDE = 1288
# Pages are analysed at no more than this long side (a 2 x 1288² render is analysed as is).
BLANK_ANALYSIS_MAX_LONG_SIDE = 2048
# Fraction of each side ignored: crop marks and page frames drawn at the very edge (pdf.js's
# vertical.pdf rules its empty pages 1-3 px from the top and bottom) and thin scanner-bed
# edges. Kept small because tightly cropped scans print up to the edge (OCRmyPDF's c02-22
# has its last line 2 % from the bottom); a wider scanner shadow makes a blank scan count
# as content, the safe direction.
BLANK_MARGIN = 0.015
# Side of the square blocks whose median is the local background (px at the reference size):
# follows lighting gradients and vignetting of scans; a block's median stays background as
# long as ink covers under half of it, which text does.
BLANK_BACKGROUND_BLOCK = 32
# A pixel is ink when it differs from its local background by more than
# max(BLANK_NOISE_SIGMAS x the page's noise, BLANK_MIN_CONTRAST). The noise is the robust
# (MAD) sigma of the differences; 5 sigmas leave essentially no Gaussian noise above it, and
# 12 grey levels is under the contrast of the faintest legible print (light-grey text on
# off-white paper is 25-60 levels) but above PNG/JPEG grain on a clean render.
BLANK_NOISE_SIGMAS = 5.0
BLANK_MIN_CONTRAST = 12.0
# ... tested on the page itself and on its 3x3 and 5x5 box means (radius 1 and 2).
BLANK_SMOOTHING_RADII = (0, 1, 2)
# Marks: ink pixels of one row (or column) at most BLANK_MARK_GAP px apart are one mark; a
# page has content when it has a mark at least BLANK_MIN_MARK px long (px at the reference
# size). 10 px at 1288 px is 0.085 in on a letter page, under a two-character word at 8 pt
# ("12" is ~17 px). A dust speck with its JPEG ringing makes a mark of up to one or two
# 8 px JPEG blocks, so a dusty blank scan is sometimes called content: the safe direction
# (on generated scans with up to 10 dark specks, 2-7 % were; with up to 3, 0-1 %).
BLANK_MARK_GAP = 3
BLANK_MIN_MARK = 10
# ... or when ink covers this share of it anyway, marks or not (and then marks aren't
# measured). Scattered noise exceedances on blank scans (JPEG grain, noise clipped at white
# that the robust sigma underestimates) reach 0.3 %; a short line of text is 0.05 %, a page
# of text 5-15 %.
BLANK_MAX_INK_FRACTION = 0.01


@dataclass(frozen=True)
class BlankMeasure:
    """What `measure_blank` saw. Pixel figures are at the analysed size (`width` x `height`:
    the page without its margins, downscaled only beyond BLANK_ANALYSIS_MAX_LONG_SIDE);
    `scale` is analysed px per px at the reference size."""

    width: int
    height: int
    scale: float
    background: float  # median grey level (0 black .. 255 white)
    noise: float  # robust sigma of the single-pixel differences from the local background
    threshold: float  # single-pixel grey-level difference above which a pixel is ink
    ink_pixels: int  # pixels any detector calls ink
    longest_mark: int  # px; 0 when not measured (ink already over the limit)
    text_layer_chars: int  # non-whitespace characters in the text layer

    @property
    def ink_fraction(self) -> float:
        return self.ink_pixels / max(1, self.width * self.height)

    @property
    def render_blank(self) -> bool:
        """The render alone looks blank (whatever the text layer says)."""
        return (
            self.ink_fraction < BLANK_MAX_INK_FRACTION
            and self.longest_mark < BLANK_MIN_MARK * self.scale
        )

    @property
    def blank(self) -> bool:
        return self.text_layer_chars == 0 and self.render_blank


def _grey(image: Image.Image | bytes | bytearray | memoryview) -> Image.Image:
    from PIL import Image

    if isinstance(image, bytes | bytearray | memoryview):
        image = Image.open(io.BytesIO(bytes(image)))
        image.load()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)  # transparent means paper
        image = flat
    grey = image.convert("L")
    long_side = max(grey.size)
    if long_side > BLANK_ANALYSIS_MAX_LONG_SIDE:
        factor = -(-long_side // BLANK_ANALYSIS_MAX_LONG_SIDE)  # ceil
        grey = grey.reduce(factor)
    return grey


def _block_medians(grey: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Medians of `block`-sized tiles (float32, whatever `grey`'s dtype: a median of 8-bit
    values is a whole or half level, exact in either), and each row's and column's tile."""
    h, w = grey.shape
    bh, bw = max(1, h // block), max(1, w // block)
    th, tw = min(block, h), min(block, w)
    tiles = grey[: bh * th, : bw * tw].reshape(bh, th, bw, tw).transpose(0, 2, 1, 3)
    # every other row and column of a tile is plenty for its median, at a quarter of the cost
    sub = tiles[:, :, ::2, ::2] if min(th, tw) >= 8 else tiles
    medians = np.median(sub.reshape(bh, bw, -1), axis=2).astype(np.float32)
    rows = np.minimum(np.arange(h) // th, bh - 1)
    cols = np.minimum(np.arange(w) // tw, bw - 1)
    return medians, rows, cols


def _block_median_background(grey: np.ndarray, block: int) -> np.ndarray:
    """Per-pixel local background: medians of `block`-sized tiles, tiled back to full size
    (the pixels past the last whole tile take the nearest tile's median)."""
    medians, rows, cols = _block_medians(grey, block)
    return medians[rows][:, cols]


# Rows of the page `_plainly_content` looks at: every this many.
PLAIN_CONTENT_ROW_STRIDE = 4


def _plainly_content(image: Image.Image | bytes | bytearray | memoryview) -> bool:
    """True when `measure_blank`'s first detector would find at least BLANK_MAX_INK_FRACTION
    of ink (so the page is not blank), decided from every PLAIN_CONTENT_ROW_STRIDE-th row
    only: the same background, noise and threshold (computed from the same pixels), and ink
    counted on those rows; ink on a subset of the rows is a lower bound on the whole page's,
    so True is exact. False means "look properly" (`measure_blank`). About 4x cheaper than
    the full measure on a page of text, which is what most pages without a text layer are."""
    grey_image = _grey(image)
    w, h = grey_image.size
    my, mx = int(h * BLANK_MARGIN), int(w * BLANK_MARGIN)
    if h - 2 * my >= 8 and w - 2 * mx >= 8:
        grey_image = grey_image.crop((mx, my, w - mx, h - my))
    scale = max(h, w) / REFERENCE_LONG_SIDE
    grey = np.asarray(grey_image)
    h, w = grey.shape
    medians, rows, cols = _block_medians(grey, max(8, round(BLANK_BACKGROUND_BLOCK * scale)))
    sample = np.abs(grey[::3, ::3].astype(np.float32) - medians[rows[::3]][:, cols[::3]])
    sigma = 1.4826 * float(np.median(sample))
    limit = max(BLANK_NOISE_SIGMAS * sigma, BLANK_MIN_CONTRAST)
    step = PLAIN_CONTENT_ROW_STRIDE
    diff = np.abs(grey[::step].astype(np.float32) - medians[rows[::step]][:, cols])
    return int(np.count_nonzero(diff > limit)) >= BLANK_MAX_INK_FRACTION * h * w


def _longest_mark(ink: np.ndarray, gap: int) -> int:
    """Longest horizontal or vertical stretch of ink, gaps of up to `gap` px bridged."""
    best = 0
    for mask in (ink, ink.T):
        rows = mask[mask.any(axis=1)]  # near-blank pages: a handful of rows
        if rows.size == 0:
            continue
        left = np.zeros_like(rows)
        right = np.zeros_like(rows)
        for k in range(1, gap + 1):
            left[:, k:] |= rows[:, :-k]
            right[:, :-k] |= rows[:, k:]
        closed = rows | (left & right)
        flat = np.zeros((closed.shape[0], closed.shape[1] + 1), dtype=np.int8)
        flat[:, :-1] = closed
        edges = np.diff(np.concatenate(([0], flat.ravel())))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if starts.size:
            best = max(best, int((ends - starts).max()))
    return best


def measure_blank(
    image: Image.Image | bytes | bytearray | memoryview, text_layer: str | None = None
) -> BlankMeasure:
    """Measure how much ink a rendered page carries (see `BlankMeasure`); `image` is a PIL
    image or encoded image bytes (PNG, JPEG, WebP...)."""
    from PIL import ImageFilter

    image = _grey(image)
    w, h = image.size
    my, mx = int(h * BLANK_MARGIN), int(w * BLANK_MARGIN)
    if h - 2 * my >= 8 and w - 2 * mx >= 8:
        image = image.crop((mx, my, w - mx, h - my))
    scale = max(h, w) / REFERENCE_LONG_SIDE
    grey = np.asarray(image, dtype=np.float32)
    h, w = grey.shape
    background = _block_median_background(grey, max(8, round(BLANK_BACKGROUND_BLOCK * scale)))
    # Three detectors, each against its own noise level: single pixels (thin strokes on clean
    # pages), and 3x3 and 5x5 means (strokes on noisy scans: the means have a third and a
    # fifth of the noise, and keep more of a stroke's contrast than that).
    ink = np.zeros(grey.shape, dtype=bool)
    noise = threshold = 0.0
    for i, radius in enumerate(BLANK_SMOOTHING_RADII):
        values = grey
        if radius:
            values = np.asarray(image.filter(ImageFilter.BoxBlur(radius)), dtype=np.float32)
        diff = np.abs(values - background)
        sigma = 1.4826 * float(np.median(diff[::3, ::3]))  # a strided sample is as good
        limit = max(BLANK_NOISE_SIGMAS * sigma, BLANK_MIN_CONTRAST)
        ink |= diff > limit
        if i == 0:
            noise, threshold = sigma, limit
            if ink.sum() >= BLANK_MAX_INK_FRACTION * h * w:
                break  # a page with content, plainly: the noisy-scan detectors can't change it
    ink_pixels = int(ink.sum())
    longest = 0
    if ink_pixels < BLANK_MAX_INK_FRACTION * h * w:  # else content already: skip the marks
        longest = _longest_mark(ink, max(1, round(BLANK_MARK_GAP * scale)))
    text_chars = sum(not c.isspace() for c in text_layer) if text_layer else 0
    return BlankMeasure(
        width=w,
        height=h,
        scale=scale,
        background=float(np.median(grey[::3, ::3])),
        noise=noise,
        threshold=threshold,
        ink_pixels=ink_pixels,
        longest_mark=longest,
        text_layer_chars=text_chars,
    )


def is_blank(
    image: Image.Image | bytes | bytearray | memoryview, text_layer: str | None = None
) -> bool:
    """True for a page that needs no model call: its text layer has no characters and its
    render is near-uniform (no mark as long as two characters, under 1 % ink), measured
    against the page's own background, whatever its colour."""
    if text_layer and not text_layer.isspace():
        return False  # any text-layer character: never blank, no need to look at pixels
    if _plainly_content(image):
        return False  # the common case, a page of text, found from a quarter of its rows
    return measure_blank(image, text_layer).blank


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


# Recursion bound and object budget for image_coverage: hostile pages can nest forms deeply or
# hold millions of objects; beyond the budget the coverage seen so far is returned.
_MAX_FORM_DEPTH = 8
_MAX_OBJECTS = 20_000
_COVERAGE_GRID = 256


def page_image_coverage(page) -> float:
    """Fraction of an open pypdfium2 page's crop box covered by raster images (inline or
    XObject, inside forms too), as the union of their bounding boxes (clip paths ignored)."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    left, bottom, right, top = page.get_cropbox()
    width, height = right - left, top - bottom
    if not (width > 0 and height > 0):
        return 0.0
    grid = np.zeros((_COVERAGE_GRID, _COVERAGE_GRID), dtype=bool)
    seen = 0

    def mark(rect: tuple[float, float, float, float]) -> None:
        x0, y0, x1, y1 = rect
        c0 = int(np.clip(np.floor((x0 - left) / width * _COVERAGE_GRID), 0, _COVERAGE_GRID))
        c1 = int(np.clip(np.ceil((x1 - left) / width * _COVERAGE_GRID), 0, _COVERAGE_GRID))
        r0 = int(np.clip(np.floor((y0 - bottom) / height * _COVERAGE_GRID), 0, _COVERAGE_GRID))
        r1 = int(np.clip(np.ceil((y1 - bottom) / height * _COVERAGE_GRID), 0, _COVERAGE_GRID))
        grid[r0:r1, c0:c1] = True

    def walk(form, matrix, depth: int) -> None:
        nonlocal seen
        # objects inside a form report bounds in the form object's space (pdfium applies the
        # form's /Matrix but not the CTM of the Do); `matrix` maps that space to the page
        for obj in page.get_objects(max_depth=1, form=form):
            seen += 1
            if seen > _MAX_OBJECTS:
                return
            try:
                if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
                    rect = obj.get_bounds()
                    mark(matrix.on_rect(*rect) if matrix is not None else rect)
                elif obj.type == pdfium_c.FPDF_PAGEOBJ_FORM and depth < _MAX_FORM_DEPTH:
                    inner = obj.get_matrix()
                    walk(obj, inner if matrix is None else inner.multiply(matrix), depth + 1)
            except pdfium.PdfiumError:
                continue

    walk(None, None, 0)
    return float(grid.mean())


def image_coverage(pdf_bytes: bytes, page_number: int, password: str | None = None) -> float:
    """Fraction of page `page_number` (1-based) covered by raster images; see
    `page_image_coverage` (which takes an already open page: prefer it inside a render loop)."""
    from vlbeam.transforms.media.pdf_render import open_pdf

    doc = open_pdf(pdf_bytes, password)
    try:
        if not 1 <= page_number <= len(doc):
            raise IndexError(f"page {page_number} is not in 1..{len(doc)}")
        page = doc[page_number - 1]
        try:
            return page_image_coverage(page)
        finally:
            page.close()
    finally:
        doc.close()


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
# Degenerate answers

# Longest repeating unit looked for (characters, after whitespace collapsing): a paragraph.
LOOP_MAX_PERIOD = 1000
# A loop the answer was cut off in (finish_reason "length", loop running to its last
# character): any unit,
# markup-only ones included ("|   |   |", "....", "<td></td>"), at least 3 times and 64 chars.
LOOP_CUT_MIN_REPEATS = 3
LOOP_CUT_MIN_SPAN = 64
# A loop of a unit with letters (of any script) at the end of the answer (the model stopped
# after looping) or covering LOOP_DOMINANT_SHARE of it: 8 times and 160 chars.
LOOP_MIN_REPEATS = 8
LOOP_MIN_SPAN = 160
LOOP_DOMINANT_SHARE = 0.4
# ... and anywhere, if it repeats 20 times over 400 chars.
LOOP_ANYWHERE_MIN_REPEATS = 20
LOOP_ANYWHERE_MIN_SPAN = 400
# Characters of other text allowed after a loop the model ended that still count as "at the
# end" (a closing fence, a full stop).
LOOP_END_SLACK = 16
# Counting loops ("Item 1 Item 2 ...") are looked for with every digit read as 0, but only when
# the answer was cut off, with a unit with letters, at least this many times.
LOOP_COUNTING_MIN_REPEATS = 8

_DIGITS = str.maketrans({c: "0" for c in "0123456789"})


@dataclass(frozen=True)
class RepetitionLoop:
    """A stretch of the answer (whitespace runs collapsed to one space, positions in that
    string) that repeats `unit` back to back."""

    start: int
    end: int
    unit: str
    repeats: float
    rule: str  # "cut_off", "at_end", "dominant", "anywhere", "counting"

    @property
    def span(self) -> int:
        return self.end - self.start


def _runs(eq: np.ndarray, need: int):
    """(start, end) of the runs of True in `eq` at least `need` long."""
    edges = np.diff(np.concatenate(([0], eq.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    long = (ends - starts) >= need
    yield from zip(starts[long].tolist(), ends[long].tolist(), strict=True)


def _periodic_runs(codes: np.ndarray, period: int, min_span: int, tail_span: int | None):
    """(start, end) of stretches of `codes` with this period: those at least `min_span` long
    anywhere, and (with `tail_span`) the one ending at the very end if at least that long.

    A stretch of span S with period p is a run of S - p positions i with codes[i] ==
    codes[i + p]. Full comparisons cost a pass over the text per period, so each is first
    screened: a run of R = S - p such positions holds two sampled positions R // 2 apart, and
    a run at the end holds the last R positions.
    """
    n = len(codes)
    need = min_span - period
    screen = max(1, need // 2)
    sampled = codes[: n - period : screen] == codes[period::screen]
    full = bool(need <= n - period and (sampled[1:] & sampled[:-1]).any())
    tail = None
    if tail_span is not None and tail_span - period <= n - period:
        t = tail_span - period
        if np.array_equal(codes[n - period - t : n - period], codes[n - t :]):
            tail = t
    if not full and tail is None:
        return
    eq = codes[:-period] == codes[period:]
    found = set()
    if full:
        for s, e in _runs(eq, need):
            found.add((s, e + period))
    if tail is not None:
        s = int(np.flatnonzero(~eq)[-1]) + 1 if not eq.all() else 0
        found.add((s, n))
    yield from sorted(found)


def _scan_loops(
    flat: str, finish_reason: str | None, counting: bool, original: str = ""
) -> RepetitionLoop | None:
    """The first loop in `flat`; with `counting`, `flat` has its digits zeroed and `original`
    is the text before that (same positions)."""
    n = len(flat)
    cut_off = finish_reason == "length"
    if counting and not cut_off:
        return None
    tail_repeats = LOOP_COUNTING_MIN_REPEATS if counting else LOOP_CUT_MIN_REPEATS
    if n < min(LOOP_CUT_MIN_SPAN if cut_off else LOOP_MIN_SPAN, LOOP_MIN_SPAN):
        return None
    codes = np.frombuffer(flat.encode("utf-32-le"), dtype=np.uint32)
    for period in range(1, min(LOOP_MAX_PERIOD, n // min(tail_repeats, LOOP_MIN_REPEATS)) + 1):
        # lettered loops anywhere (not looked for among zeroed digits), and with a cut-off
        # answer any loop reaching its end
        min_span = n + 1 if counting else max(LOOP_MIN_SPAN, LOOP_MIN_REPEATS * period)
        tail_span = max(LOOP_CUT_MIN_SPAN, tail_repeats * period) if cut_off else None
        for start, end in _periodic_runs(codes, period, min_span, tail_span):
            rule = _loop_rule(flat, start, end, period, cut_off, counting)
            if rule == "counting" and not _only_counters(original, start, end, period):
                rule = None
            if rule:
                unit = flat[start : start + period]
                return RepetitionLoop(start, end, unit, (end - start) / period, rule)
    return None


def _only_counters(original: str, start: int, end: int, period: int) -> bool:
    """Whether the units of a stretch that repeats once digits are zeroed differ only in
    counters: every number that changes from unit to unit changes by a constant step ("Item 7,
    Item 8, ..."), as in a model counting on, unlike a table's data ("Sample 1 | 0.52")."""
    # start units where no number is cut in two (digits sit at the same offsets in each unit)
    k = next(
        (
            i
            for i in range(start, start + period)
            if not original[i].isdigit() and (i == 0 or not original[i - 1].isdigit())
        ),
        None,
    )
    if k is None:
        return False
    units = [original[i : i + period] for i in range(k, end - period + 1, period)]
    numbers = [[int(x) for x in re.findall(r"\d+", unit)] for unit in units]
    if len(numbers) < 3 or len({len(row) for row in numbers}) != 1:
        return False
    counters = 0
    for column in zip(*numbers, strict=True):
        steps = {b - a for a, b in itertools.pairwise(column)}
        if steps == {0}:
            continue  # the same in every unit
        if len(steps) == 1:
            counters += 1  # counts on by a constant step
        else:
            return False  # varies like data
    return counters > 0


def _loop_rule(flat: str, start: int, end: int, period: int, cut_off: bool, counting: bool):
    """Which rule makes this periodic stretch a degenerate loop, if any."""
    span, repeats = end - start, (end - start) / period
    # a cut-off answer stops inside its loop; one the model ended may close it ("```")
    ends_answer = end == len(flat)
    at_end = end >= len(flat) - LOOP_END_SLACK
    lettered = any(c.isalpha() for c in flat[start : start + period])
    if counting:
        ok = cut_off and ends_answer and lettered and repeats >= LOOP_COUNTING_MIN_REPEATS
        return "counting" if ok else None
    if cut_off and ends_answer and repeats >= LOOP_CUT_MIN_REPEATS and span >= LOOP_CUT_MIN_SPAN:
        return "cut_off"
    if not lettered or repeats < LOOP_MIN_REPEATS or span < LOOP_MIN_SPAN:
        return None
    if at_end:
        return "at_end"
    if span >= LOOP_DOMINANT_SHARE * len(flat):
        return "dominant"
    if repeats >= LOOP_ANYWHERE_MIN_REPEATS and span >= LOOP_ANYWHERE_MIN_SPAN:
        return "anywhere"
    return None


def find_repetition(text: str, finish_reason: str | None = None) -> RepetitionLoop | None:
    """The first degenerate loop in an answer, or None (see the LOOP_* constants).

    Repeats that real pages have are not loops: table separator rows (`|---|---|`), empty
    cells, dot leaders and rules repeat markup only (no letters), so they count only where the
    answer was cut off inside them; bullets and table rows differ in their words.
    """
    flat = " ".join(text.split())
    found = _scan_loops(flat, finish_reason, counting=False)
    if found is None and finish_reason == "length" and any(c.isdigit() for c in flat):
        found = _scan_loops(flat.translate(_DIGITS), finish_reason, counting=True, original=flat)
    return found


_FENCE_LINE = re.compile(r"^\s*```[\w-]*\s*$", re.MULTILINE)


def is_empty_answer(text: str | None) -> bool:
    """No text at all once whitespace and bare code fences (```markdown) are removed."""
    return not text or not _FENCE_LINE.sub("", text).strip()


def quality_flags(text: str | None, finish_reason: str | None, blank: bool) -> list[str]:
    """Flags for one page's answer, in QUALITY_FLAGS order: `repetition` (a degenerate loop,
    `find_repetition`), `length` (cut off by --max-new-tokens), `empty` (no text on a page that
    isn't blank)."""
    flags = []
    if text and find_repetition(text, finish_reason) is not None:
        flags.append(FLAG_REPETITION)
    if finish_reason == "length":
        flags.append(FLAG_LENGTH)
    if not blank and is_empty_answer(text):
        flags.append(FLAG_EMPTY)
    return flags


# ---------------------------------------------------------------------------------------------
# Retries of flagged pages

# Attempt 0 is the configured (greedy) call; retry k samples at RETRY_FIRST_TEMPERATURE +
# (k - 1) x RETRY_TEMPERATURE_STEP, capped: 0.5, 0.7, 0.9, 1.0, ... Sampling is what breaks a
# greedy loop; Qwen3-VL's own recommended sampling temperature (0.7) is the second retry.
RETRY_FIRST_TEMPERATURE = 0.5
RETRY_TEMPERATURE_STEP = 0.2
RETRY_MAX_TEMPERATURE = 1.0


def retry_temperature(attempt: int) -> float:
    """Sampling temperature for `attempt` (0 = the first, greedy call; 1.. = retries)."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if attempt == 0:
        return 0.0
    t = RETRY_FIRST_TEMPERATURE + (attempt - 1) * RETRY_TEMPERATURE_STEP
    return round(min(RETRY_MAX_TEMPERATURE, t), 6)


@dataclass(frozen=True)
class Answer:
    """One attempt's answer for a page, with its flags."""

    text: str
    finish_reason: str | None
    flags: tuple[str, ...]
    attempt: int = 0

    @classmethod
    def of(
        cls, text: str | None, finish_reason: str | None, blank: bool = False, attempt: int = 0
    ) -> Answer:
        """An answer with its `quality_flags` computed."""
        text = text or ""
        return cls(text, finish_reason, tuple(quality_flags(text, finish_reason, blank)), attempt)


def useful_length(text: str, finish_reason: str | None = None) -> int:
    """Characters of an answer (whitespace collapsed) with any degenerate loop counted once."""
    flat = " ".join(text.split())
    loop = find_repetition(text, finish_reason) or find_repetition(text, "length")
    if loop is None:
        return len(flat)
    return len(flat) - loop.span + len(loop.unit)


def better_answer(a: Answer, b: Answer) -> Answer:
    """The better of two answers for one page: fewer flags, then more non-degenerate text
    (`useful_length`); on a tie, `a` (the earlier attempt)."""
    if len(a.flags) != len(b.flags):
        return a if len(a.flags) < len(b.flags) else b
    return (
        b if useful_length(b.text, b.finish_reason) > useful_length(a.text, a.finish_reason) else a
    )


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
