"""Blank pages: a near-uniform render with no text-layer characters needs no model call.
Pure functions on pixels (numpy and Pillow; no pdfium, no Beam, no model).

Ink is measured against the page's own local background, so off-white and dark pages, scanner
noise and JPEG grain don't count, while one short line of small or faint text does
(`measure_blank`, `is_blank`). Thresholds are module constants, each with the reason for its
value. `pdf_render` calls `is_blank` on every render.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

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
