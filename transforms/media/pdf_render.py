"""Pure functions that open PDFs and images and turn pages into encoded RGB images.

These run inside the helper process (see `helper_process`), never in the
Beam worker itself, so a hostile file can only take down (or hang) that helper.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
from dataclasses import dataclass

import numpy as np

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.elements import TextLine
from vlbeam.schemas.errors import (
    DegeneratePage,
    EncryptedPdf,
    InvalidImage,
    InvalidPdf,
    NoPages,
    PageTooLarge,
)
from vlbeam.transforms.media.blank_pages import is_blank
from vlbeam.transforms.media.text_layer import clean_text_layer

logger = logging.getLogger(__name__)

# The largest raster input we agree to decode at all (pixels), before downscaling.
MAX_SOURCE_IMAGE_PIXELS = 400_000_000
# Pages beyond this many points on a side are not paper (PDF's own limit is 14,400 pt).
MAX_PAGE_POINTS = 200 * 72


@dataclass(frozen=True)
class RenderedPage:
    image: bytes
    image_format: str
    width_px: int
    height_px: int
    text_layer: str | None
    blank: bool = False  # near-uniform render and no text-layer characters (blank_pages)
    image_coverage: float | None = None  # share of a PDF page covered by raster images
    page_width: float | None = None  # the page as displayed: points (PDF) or pixels (image)
    page_height: float | None = None
    page_unit: str | None = None  # pt | px
    text_lines: tuple[TextLine, ...] = ()  # cfg.text_boxes: the text layer's lines with boxes


# A PNG this many bytes per pixel or larger holds too much detail (or noise) to be a blank
# page: it is passed on without decoding it to look (a blank render compresses ~20x smaller).
BLANK_PNG_MAX_BYTES_PER_PIXEL = 0.02


def target_size(width: float, height: float, cfg: RenderConfig) -> tuple[int, int]:
    """Pixel size for a page or image of `width` x `height` (points or pixels).

    The long side goes to `cfg.target_long_side` (or, with `cfg.target_short_side`, the short
    side to that), then the whole is scaled down further if it would exceed `cfg.max_pixels`.
    Degenerate shapes raise.
    """
    if not (width > 0 and height > 0) or not math.isfinite(width * height):
        raise DegeneratePage(f"page has no area ({width:g} x {height:g})")
    if max(width, height) > MAX_PAGE_POINTS * 100:
        raise PageTooLarge(f"page size {width:g} x {height:g} is beyond any real page")
    if cfg.target_short_side is not None:
        scale = cfg.target_short_side / min(width, height)
    else:
        scale = cfg.target_long_side / max(width, height)
    if width * height * scale * scale > cfg.max_pixels:  # hard cap: round down
        scale = math.sqrt(cfg.max_pixels / (width * height))
        w_px, h_px = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    else:
        w_px, h_px = max(1, round(width * scale)), max(1, round(height * scale))
    if min(w_px, h_px) < cfg.min_short_side:
        raise DegeneratePage(
            f"page {width:g} x {height:g} has an aspect ratio of "
            f"{max(width, height) / min(width, height):.0f}:1; at {w_px} x {h_px} px its short "
            f"side is under {cfg.min_short_side} px"
        )
    return w_px, h_px


def open_pdf(data, password: str | None = None, path: str | None = None):
    """Open a PDF with pypdfium2: no password (i.e. the empty one) first, then `password`
    as given and in its SASLprep form (AES-256 R6 files need the latter).

    `data`: the file's bytes, or a read-only mmap of it. With `path` (the same file on local
    disk) pdfium reads the file itself, part by part, instead of taking all of it in memory."""
    import pypdfium2 as pdfium

    if not len(data):
        raise InvalidPdf("file is empty (0 bytes)")
    tries: list[str | None] = [None]
    if password:
        tries += dict.fromkeys([password, saslprep(password)])
    for pw in tries:
        try:
            doc = pdfium.PdfDocument(path if path is not None else data, password=pw)
        except pdfium.PdfiumError:
            continue
        with contextlib.suppress(pdfium.PdfiumError):
            doc.init_forms()  # so form fields (AcroForm widgets) are drawn
        return doc
    # pdfium's error text is a process-wide "last error" that can be stale, so decide
    # from the file itself whether it is encrypted.
    if data.find(b"/Encrypt") != -1:
        if password:
            raise EncryptedPdf("PDF is encrypted and the given --pdf-password is wrong")
        raise EncryptedPdf("PDF is encrypted with a user password; pass --pdf-password to open it")
    if b"%%EOF" not in data[-2048:]:
        raise InvalidPdf("not a readable PDF: the file is truncated or damaged (no %%EOF)")
    raise InvalidPdf("not a readable PDF: its structure (xref, page tree) is broken")


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep mapping + NFKC, as PDF 2.0 asks for AES-256 passwords."""
    import stringprep
    import unicodedata

    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    return unicodedata.normalize("NFKC", mapped)


def count_pages(data, password: str | None = None, path: str | None = None) -> int:
    doc = open_pdf(data, password, path)
    try:
        n = len(doc)
    finally:
        doc.close()
    if n <= 0:
        raise NoPages("PDF has no pages")
    return n


def rendered_sizes(doc_or_image, kind: str, cfg: RenderConfig) -> list:
    """Per page, the (width, height) px a render would have, from the page boxes (pdfium
    reads them without loading a page's content) or an image's header: nothing is rendered
    or decoded. A page the run would refuse (`target_size` raises) is (error type, message)
    instead. `doc_or_image`: an open pypdfium2 document, or an image's bytes. For
    `vlbeam plan`; the rules are `target_size`'s and `render_image`'s."""
    if kind == "image":
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = MAX_SOURCE_IMAGE_PIXELS
        try:
            with Image.open(io.BytesIO(bytes(doc_or_image))) as image:
                width, height = image.size
        except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
            raise InvalidImage(f"cannot decode image: {exc}") from None
        return [_image_render_size(width, height, cfg)]
    import pypdfium2 as pdfium

    doc, sizes = doc_or_image, []
    if len(doc) <= 0:
        raise NoPages("PDF has no pages")
    for index in range(len(doc)):
        try:
            sizes.append(_page_render_size(*doc.get_page_size(index), cfg))
        except pdfium.PdfiumError as exc:  # the run's render fails on it the same way
            sizes.append(("InvalidPdf", f"page {index + 1} cannot be loaded: {exc}"))
    return sizes


def _page_render_size(width: float, height: float, cfg: RenderConfig):
    try:
        return target_size(width, height, cfg)
    except (DegeneratePage, PageTooLarge) as exc:
        return type(exc).__name__, str(exc)


def _image_render_size(width: int, height: int, cfg: RenderConfig):
    """An image is only ever scaled down (an upright PNG within size passes unchanged)."""
    size = _page_render_size(width, height, cfg)
    if isinstance(size[0], str) or size[0] * size[1] < width * height:
        return size
    return width, height


def render_pdf_page(
    doc, page_number: int, cfg: RenderConfig, pdf_path: str | None = None
) -> RenderedPage:
    """Render page `page_number` (1-based) of an open pypdfium2 document (with poppler
    instead when `cfg.renderer` is pdf2image: then `pdf_path` is the PDF on disk)."""
    import pypdfium2 as pdfium

    try:
        page = doc[page_number - 1]
    except (pdfium.PdfiumError, IndexError) as exc:
        raise InvalidPdf(f"page {page_number} cannot be loaded: {exc}") from None
    try:
        width, height = page.get_size()
        rotated = page.get_rotation() in (90, 270)
        # pdfium reports the rotated size; swap back to the unrotated size, which is
        # what both pdfium's scale and poppler's -scale-to-x/-y apply to.
        if rotated:
            width, height = height, width
        w_px, h_px = target_size(width, height, cfg)
        text_layer = _text_layer(page) if cfg.extract_text_layer else None
        lines = text_lines(page) if cfg.text_boxes and text_layer else ()
        if cfg.renderer == "pdf2image":
            if pdf_path is None:
                raise ValueError("the pdf2image renderer needs the PDF on disk")
            image = _render_poppler(pdf_path, page_number, (w_px, h_px), cfg)
        else:
            scale = max(w_px, h_px) / max(width, height)
            image = page.render(scale=scale, may_draw_forms=True).to_pil()
            # pdfium rounds each side up; trim the extra pixel so both renderers agree
            # with target_size (and the pixel cap holds exactly).
            want = (h_px, w_px) if rotated else (w_px, h_px)
            if image.size != want and all(
                0 <= a - b <= 1 for a, b in zip(image.size, want, strict=True)
            ):
                image = image.crop((0, 0, *want))
        if image.mode != "RGB":  # pdfium's BGR comes out as a new RGB image: no copy
            image = image.convert("RGB")
        coverage = page_image_coverage(page)
    finally:
        page.close()
    shown_w, shown_h = (height, width) if rotated else (width, height)
    return dataclasses.replace(
        encoded_page(
            image, cfg, text_layer, blank=is_blank(image, text_layer), image_coverage=coverage
        ),
        page_width=float(shown_w),
        page_height=float(shown_h),
        page_unit="pt",
        text_lines=lines,
    )


def display_rect(
    rect: tuple[float, float, float, float],
    cropbox: tuple[float, float, float, float],
    rotation: int,
) -> tuple[float, float, float, float]:
    """A rectangle in PDF user space (left, bottom, right, top; as pdfium's text and object
    boxes are) → (x0, y0, x1, y1) in points from the top-left of the page as displayed: the
    crop box's corner is the origin, y runs down, and /Rotate (clockwise) is applied."""
    left, bottom, right, top = cropbox
    width, height = right - left, top - bottom
    u0, u1 = rect[0] - left, rect[2] - left
    v0, v1 = top - rect[3], top - rect[1]
    rotation %= 360
    if rotation == 90:
        return (height - v1, u0, height - v0, u1)
    if rotation == 180:
        return (width - u1, height - v1, width - u0, height - v0)
    if rotation == 270:
        return (v0, width - u1, v1, width - u0)
    return (u0, v0, u1, v1)


# A page with more text rectangles than this gets no per-line boxes (a hostile or
# pathological text layer); its text is still read whole.
MAX_TEXT_RECTS = 20_000


def text_lines(page) -> tuple[TextLine, ...]:
    """The text layer of an open pypdfium2 page as lines with boxes (pdfium's text rectangles:
    runs of characters on one line in one font), in the page's own order; runs outside the
    crop box are left out, boxes cut to it."""
    textpage = page.get_textpage()
    try:
        n = textpage.count_rects()
        if n > MAX_TEXT_RECTS:
            return ()
        cropbox, rotation = page.get_cropbox(), page.get_rotation()
        width, height = page.get_size()  # as displayed
        lines = []
        for i in range(n):
            rect = textpage.get_rect(i)
            x0, y0, x1, y1 = display_rect(rect, cropbox, rotation)
            x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)
            if x1 <= x0 or y1 <= y0:  # outside the crop box: not on the page as shown
                continue
            text = clean_text_layer(textpage.get_text_bounded(*rect).replace("\r\n", " "))
            if text:
                lines.append(TextLine(text, x0, y0, x1, y1))
    finally:
        textpage.close()
    return tuple(lines)


# Recursion bound and object budget for page_image_coverage: hostile pages can nest forms
# deeply or hold millions of objects; beyond the budget the coverage seen so far is returned.
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


def _text_layer(page) -> str | None:
    textpage = page.get_textpage()
    try:
        text = textpage.get_text_bounded()
    finally:
        textpage.close()
    text = text.replace("\r\n", "\n").strip()
    return text or None


def _render_poppler(pdf_path: str, page_number: int, size: tuple[int, int], cfg: RenderConfig):
    from pdf2image import convert_from_path
    from pdf2image.exceptions import PDFPageCountError, PDFSyntaxError

    try:
        images = convert_from_path(
            pdf_path,
            first_page=page_number,
            last_page=page_number,
            size=size,
            userpw=cfg.password,
            timeout=cfg.timeout_s,
            fmt="ppm",
        )
    except (PDFPageCountError, PDFSyntaxError) as exc:
        raise InvalidPdf(f"poppler cannot render page {page_number}: {exc}") from None
    if not images:
        raise InvalidPdf(f"poppler rendered nothing for page {page_number}")
    return images[0]


def render_image(data: bytes, cfg: RenderConfig) -> RenderedPage:
    """A raster image (PNG/JPEG/TIFF/WebP) as a one-page document (first frame)."""
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = MAX_SOURCE_IMAGE_PIXELS
    try:
        image = Image.open(io.BytesIO(data))
        w_px, h_px = target_size(image.width, image.height, cfg)
        if _usable_as_is(image, data, cfg.image_format, w_px * h_px):
            # already an upright RGB PNG within size: pass the bytes on unchanged. Every
            # chunk's CRC is checked, so a truncated or corrupted file still fails here.
            Image.open(io.BytesIO(data)).verify()
            small = len(data) < BLANK_PNG_MAX_BYTES_PER_PIXEL * image.width * image.height
            return RenderedPage(data, cfg.image_format, image.width, image.height, None,
                                blank=small and is_blank(data, None), page_width=image.width,
                                page_height=image.height, page_unit="px")  # fmt: skip
        original = (float(image.width), float(image.height))  # before draft or downscale
        if image.format == "JPEG" and w_px < image.width:
            image.draft("RGB", (w_px, h_px))  # decode at reduced size
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
            if image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # turned a quarter
                original = original[::-1]
            image = ImageOps.exif_transpose(image)
        image = image.convert("RGB")
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"cannot decode image: {exc}") from None
    w_px, h_px = target_size(image.width, image.height, cfg)
    if w_px * h_px < image.width * image.height:  # downscale only: upscaling adds no detail
        image = image.resize((w_px, h_px), Image.Resampling.LANCZOS)
    return dataclasses.replace(
        encoded_page(image, cfg, None, blank=is_blank(image, None)),
        page_width=original[0],
        page_height=original[1],
        page_unit="px",
    )


EXIF_ORIENTATION = 0x0112


def _usable_as_is(image, data: bytes, image_format: str, target_pixels: int) -> bool:
    """An 8-bit RGB PNG, single frame, without EXIF (so never rotated), no larger than the
    target size. (PIL reads a PNG's EXIF only by decoding it: look for the chunk instead.)"""
    return (
        image_format == "png"
        and image.format == "PNG"
        and image.mode == "RGB"
        and getattr(image, "n_frames", 1) == 1
        and target_pixels >= image.width * image.height
        and b"eXIf" not in data
    )


def encoded_page(
    image,
    cfg: RenderConfig,
    text_layer: str | None,
    *,
    blank: bool = False,
    image_coverage: float | None = None,
) -> RenderedPage:
    return RenderedPage(
        image=encode_image(image, cfg.image_format),
        image_format=cfg.image_format,
        width_px=image.width,
        height_px=image.height,
        text_layer=text_layer,
        blank=blank,
        image_coverage=image_coverage,
    )


def encode_image(image, image_format: str) -> bytes:
    """Encode for transport between stages. PNG level 1 by default (lossless, fastest
    lossless option measured in bench/bench_split.py)."""
    buf = io.BytesIO()
    if image_format == "png":
        image.save(buf, format="PNG", compress_level=1)
    elif image_format == "webp":
        image.save(buf, format="WEBP", lossless=True, method=0)
    elif image_format == "jpeg":
        image.save(buf, format="JPEG", quality=95)
    else:
        raise ValueError(f"unknown image format {image_format!r}")
    return buf.getvalue()
