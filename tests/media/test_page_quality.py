"""Page quality: blank pages (`media.blank_pages`), image coverage (`media.pdf_render`),
text-layer quality and agreement (`media.text_layer`), degenerate answers and retries
(`answers`).

Generated pages (PIL-drawn) and real corpus pages rendered with `pdf_render`.
"""

from __future__ import annotations

import io
import random
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from vlbeam.schemas.config import TEXT_LAYER_POLICIES, RenderConfig
from vlbeam.transforms.answers.degenerate import find_repetition, quality_flags
from vlbeam.transforms.answers.retry import (
    RETRY_MAX_TEMPERATURE,
    Answer,
    better_answer,
    retry_temperature,
    useful_length,
)
from vlbeam.transforms.media import blank_pages
from vlbeam.transforms.media.blank_pages import is_blank, measure_blank
from vlbeam.transforms.media.pdf_render import open_pdf, page_image_coverage, render_pdf_page
from vlbeam.transforms.media.text_layer import (
    MIN_CHARS_PER_SQUARE_PAGE,
    clean_text_layer,
    decide_page,
    levenshtein,
    min_text_layer_chars,
    normalize_for_comparison,
    text_layer_agreement,
    text_layer_usable,
)


def image_coverage(pdf_bytes: bytes, page_number: int, password: str | None = None) -> float:
    """`page_image_coverage` of page `page_number` (1-based) of a PDF given as bytes."""
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


W, H = 995, 1288  # a letter page at vlbeam's default 1288 px long side
PT = H / (11 * 72)  # px per point at that size


# ------------------------------------------------------------------ generated pages


def _page(bg=255, noise=0.0, gradient=0.0, specks=0, seed=0, size=(W, H)) -> Image.Image:
    """A blank page: background grey (or RGB) `bg`, Gaussian noise, a top-to-bottom lighting
    gradient, and `specks` dark dust specks of 1-2 px."""
    rng = np.random.default_rng(seed)
    w, h = size
    a = np.empty((h, w, 3), dtype=np.float32)
    a[:] = bg
    a += np.linspace(-gradient / 2, gradient / 2, h, dtype=np.float32)[:, None, None]
    if noise:
        a += rng.normal(0, noise, (h, w, 1)).astype(np.float32)
    for _ in range(specks):
        y, x = int(rng.integers(60, h - 60)), int(rng.integers(60, w - 60))
        s = int(rng.integers(1, 3))
        a[y : y + s, x : x + s] -= float(rng.integers(40, 100))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _text(image, text, xy=(150, 640), fill=0, points=10.0, vertical=False) -> Image.Image:
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=round(points * PT))
    fill = (fill,) * 3 if isinstance(fill, int) else fill
    if vertical:  # one character under the other, as in vertical CJK writing
        x, y = xy
        for ch in text:
            draw.text((x, y), ch, fill=fill, font=font)
            y += round(points * PT * 1.2)
    else:
        draw.text(xy, text, fill=fill, font=font)
    return image


def _jpeg(image: Image.Image, quality=75) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _rgba_transparent() -> Image.Image:
    return Image.new("RGBA", (W, H), (0, 0, 0, 0))  # transparent black: paper, not ink


BLANK_PAGES = {
    "white": lambda: _page(),
    "white PNG bytes": lambda: _png(_page()),
    "off-white scan, noise, gradient, JPEG": lambda: _jpeg(
        _page((242, 238, 226), noise=4, gradient=20, specks=2, seed=1), 75
    ),
    "grey scan, heavy noise, JPEG q50": lambda: _jpeg(_page(225, noise=8, seed=2), 50),
    "dark page": lambda: _page((25, 25, 35), noise=3, seed=3),
    "black page": lambda: _page(0),
    "smooth gradient": lambda: _page(200, gradient=120),
    "transparent RGBA": _rgba_transparent,
    "greyscale L mode": lambda: _page(240, noise=2, seed=4).convert("L"),
    "small image": lambda: _page(250, size=(120, 160)),
}


@pytest.mark.parametrize("name", BLANK_PAGES)
def test_blank_generated_pages_are_blank(name):
    image = BLANK_PAGES[name]()
    m = measure_blank(image)
    assert m.render_blank, m
    assert is_blank(image, None)
    assert is_blank(image, "  \n ")  # whitespace is no text
    assert not is_blank(image, "x")  # any text-layer character: not blank


SPARSE_PAGES = {
    # one short line of small text: "no false positives on sparse pages"
    "one short line, 10 pt": lambda: _text(_page(), "Page 12 of 40"),
    "one word, 8 pt": lambda: _text(_page(), "Fin", points=8),
    "page number only, 9 pt": lambda: _text(_page(), "- 12 -", points=9, xy=(480, 1180)),
    "faint grey line on off-white": lambda: _text(
        _page(245, noise=1.5, seed=5), "A faint line of light grey text", fill=205
    ),
    "faint scan, JPEG": lambda: _jpeg(
        _text(
            _page((238, 236, 230), noise=4, gradient=16, seed=6),
            "faint words on a scan",
            fill=(200, 198, 192),
        ),
        70,
    ),
    "short line on a noisy scan": lambda: _jpeg(
        _text(_page(228, noise=7, specks=2, seed=7), "Continued", fill=170, points=9), 60
    ),
    "light text on a dark page": lambda: _text(
        _page((25, 25, 35), noise=3, seed=8), "Light text on a dark page", fill=200
    ),
    "yellow text on white": lambda: _text(_page(), "Highlighted note", fill=(230, 220, 40)),
    "vertical CJK column": lambda: _text(_page(), "日本語", xy=(820, 200), vertical=True),
    "line near the bottom margin": lambda: _text(_page(), "Footnote 3", xy=(150, 1215)),
}


@pytest.mark.parametrize("name", SPARSE_PAGES)
def test_sparse_generated_pages_are_not_blank(name):
    image = SPARSE_PAGES[name]()
    m = measure_blank(image)
    assert not m.render_blank, m
    assert not is_blank(image, None)


def test_blank_measure_follows_the_background():
    dark = measure_blank(_page((25, 25, 35), noise=3, seed=3))
    light = measure_blank(_page(240, noise=3, seed=3))
    assert dark.background < 40 < 230 < light.background
    assert 2.0 < light.noise < 4.0  # the robust sigma sees the noise
    assert light.threshold == pytest.approx(max(5 * light.noise, blank_pages.BLANK_MIN_CONTRAST))
    clean = measure_blank(_page())
    assert clean.noise == 0 and clean.ink_pixels == 0 and clean.longest_mark == 0


def test_text_that_is_too_faint_for_the_noise_is_not_ink():
    """The limit works both ways: contrast 10 under noise sigma 6 is below the threshold."""
    page = _text(_page(230, noise=6, seed=9), "xx", fill=220, points=8)
    assert measure_blank(_jpeg(page)).render_blank


def test_edge_frames_are_ignored_but_content_inside_the_margin_is_not():
    page = _page()
    draw = ImageDraw.Draw(page)
    draw.line((0, 2, W, 2), fill=0, width=1)  # page frame / crop marks at the very edge
    draw.line((0, H - 3, W, H - 3), fill=0, width=1)
    draw.rectangle((0, 0, 10, H), fill=40)  # a thin scanner-bed shadow down the side
    assert is_blank(page, None)
    inside = round(H * blank_pages.BLANK_MARGIN) + 20
    _text(page, "12", xy=(480, inside), points=9)
    assert not is_blank(page, None)


def test_randomised_blank_scans_and_single_words():
    """Seeded sweep: blank scans (noise <= 6, <= 2 light specks, JPEG 70-95) stay blank; a
    single word of 8-12 pt with contrast >= 40 on the same scans never does."""
    rng = random.Random(15)
    words = ["12", "Fin", "Page 7", "- 12 -", "Notes", "Index", "A1"]
    for i in range(24):
        kind = dict(
            bg=rng.randint(200, 250),
            noise=rng.uniform(0, 6),
            gradient=rng.uniform(0, 30),
            seed=100 + i,
        )
        quality = rng.randint(70, 95)
        blank = _jpeg(_page(**kind, specks=rng.randint(0, 2)), quality)
        assert measure_blank(blank).render_blank, (i, kind)
        contrast = rng.randint(40, 150)
        page = _text(
            _page(**kind),
            words[i % len(words)],
            xy=(rng.randint(80, 800), rng.randint(80, 1150)),
            fill=kind["bg"] - contrast,
            points=rng.uniform(8, 12),
        )
        assert not measure_blank(_jpeg(page, quality)).render_blank, (i, kind, contrast)


def test_large_renders_are_analysed_downscaled():
    big = _text(_page(size=(W * 3, H * 3)), "Page 12 of 40", xy=(450, 1900), points=30)
    m = measure_blank(big)
    assert max(m.width, m.height) <= blank_pages.BLANK_ANALYSIS_MAX_LONG_SIDE
    assert not m.render_blank
    assert measure_blank(_page(size=(W * 3, H * 3))).render_blank


# ------------------------------------------------------------------ corpus pages

CFG = RenderConfig()


@pytest.fixture(scope="module")
def pdfs(corpus):
    good = corpus / "pdf" / "good"
    cache: dict[str, object] = {}

    def open_(name: str):
        if name not in cache:
            cache[name] = open_pdf((good / name).read_bytes())
        return cache[name]

    yield open_
    for doc in cache.values():
        doc.close()


def _render(pdfs, name: str, page: int):
    return render_pdf_page(pdfs(name), page, CFG)


# (file, pages): pages rendered; every one must be non-blank from its render alone
CONTENT_PAGES = [
    ("pdfjs_tracemonkey.pdf", [1, 2, 14]),
    ("samplefiles_multicolumn.pdf", [1, 3]),
    ("samplefiles_habibi-rotated.pdf", [1, 2, 3, 4]),  # one short line on each, rotated
    ("pdfjs_vertical.pdf", [1]),  # two short vertical lines of Japanese
    ("pdfjs_XiaoBiaoSong.pdf", [1]),
    ("pdfjs_freeculture.pdf", [1, 3, 30, 255]),  # dark cover, sparse title pages, a figure
    ("samplefiles_GeoTopo-komprimiert.pdf", [1, 5]),  # title page, one-line page
    ("pypdf_Seige_of_Vicksburg_Sample_OCR.pdf", [1, 6]),  # scans
    ("ocrmypdf_c02-22.pdf", [1]),
    ("ocrmypdf_linn.pdf", [1]),
    ("ocrmypdf_rotated_skew.pdf", [1]),
    ("ocrmypdf_enormous.pdf", [1]),
    ("pdfjs_prefilled_f1040.pdf", [2]),
]


@pytest.mark.parametrize(("name", "pages"), CONTENT_PAGES, ids=[c[0] for c in CONTENT_PAGES])
def test_corpus_pages_with_content_are_not_blank(pdfs, name, pages):
    for page in pages:
        rendered = _render(pdfs, name, page)
        m = measure_blank(rendered.image)  # the render alone, text layer ignored
        assert not m.render_blank, (name, page, m)
        assert not is_blank(rendered.image, rendered.text_layer)


def test_corpus_empty_pages_are_blank(pdfs):
    """pdf.js vertical.pdf pages 2 and 3 hold nothing but a frame rule at the page's very top
    and bottom edge, and no text layer: blank. Page 1 (two short vertical lines) is not."""
    for page in (2, 3):
        rendered = _render(pdfs, "pdfjs_vertical.pdf", page)
        assert rendered.text_layer is None
        assert is_blank(rendered.image, rendered.text_layer)
    first = _render(pdfs, "pdfjs_vertical.pdf", 1)
    assert not is_blank(first.image, None)


def _one_band(image: Image.Image, top: int, bottom: int, paper) -> Image.Image:
    """The page with everything outside rows top..bottom painted over with `paper`."""
    out = Image.new("RGB", image.size, paper)
    out.paste(image.crop((0, top, image.width, bottom)), (0, top))
    return out


def _text_rows(image: Image.Image) -> list[tuple[int, int]]:
    """Bands of rows holding ink (dark pixels), top to bottom."""
    grey = np.asarray(image.convert("L"))
    inked = (grey < np.median(grey) - 60).sum(axis=1) > 2
    rows, start = [], None
    for y, on in enumerate([*inked.tolist(), False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            rows.append((start, y))
            start = None
    return rows


def test_corpus_page_reduced_to_one_line_is_not_blank(pdfs):
    """A real line of a real page, alone on the page: clean, and as a noisy JPEG scan."""
    rendered = _render(pdfs, "pdfjs_tracemonkey.pdf", 1)
    image = Image.open(io.BytesIO(rendered.image)).convert("RGB")
    bands = [b for b in _text_rows(image) if 8 <= b[1] - b[0] <= 20]
    top, bottom = bands[len(bands) // 2]  # a line of body text from the middle of the page
    one_line = _one_band(image, top - 2, bottom + 2, (255, 255, 255))
    assert not is_blank(one_line, None)
    noisy = np.asarray(one_line, dtype=np.float32) * 0.9 + 20  # greyer paper, paler ink
    noisy += np.random.default_rng(0).normal(0, 5, noisy.shape[:2])[..., None]
    scan = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    assert not is_blank(_jpeg(scan, 70), None)
    # and the same page with that line painted out too is blank
    assert is_blank(_one_band(image, 0, 0, (255, 255, 255)), None)


def test_corpus_scan_reduced_to_one_line_is_not_blank(pdfs):
    """One line of a real scan (Huckleberry Finn p. 22) on that scan's own paper colour."""
    rendered = _render(pdfs, "ocrmypdf_c02-22.pdf", 1)
    image = Image.open(io.BytesIO(rendered.image)).convert("RGB")
    paper = tuple(int(v) for v in np.median(np.asarray(image).reshape(-1, 3), axis=0))
    # the full-width lines under the illustration, the bottom sixth of the page
    bands = [b for b in _text_rows(image) if 8 <= b[1] - b[0] <= 40 and b[0] > image.height * 0.83]
    assert len(bands) >= 3
    top, bottom = bands[1]
    assert not is_blank(_one_band(image, top - 2, bottom + 2, paper), None)
    assert is_blank(_one_band(image, 0, 0, paper), None)


# ------------------------------------------------------------------ text-layer quality


def _usable(pdfs, name: str, page: int):
    rendered = _render(pdfs, name, page)
    pdf_page = pdfs(name)[page - 1]
    try:
        coverage = page_image_coverage(pdf_page)
    finally:
        pdf_page.close()
    return text_layer_usable(rendered.text_layer, rendered.width_px, rendered.height_px, coverage)


@pytest.mark.parametrize(
    ("name", "page", "expected"),
    [
        # born-digital text: usable
        ("pdfjs_tracemonkey.pdf", 1, "ok"),
        ("pdfjs_tracemonkey.pdf", 2, "ok"),  # small figures, 5 % of the page
        ("samplefiles_multicolumn.pdf", 1, "ok"),
        ("pdfjs_prefilled_f1040.pdf", 1, "ok"),
        ("pypdf_SF424_page2.pdf", 1, "ok"),
        ("pdfjs_XiaoBiaoSong.pdf", 1, "ok"),  # Chinese table of contents with leaders
        ("samplefiles_GeoTopo-komprimiert.pdf", 2, "ok"),
        ("pdfjs_freeculture.pdf", 2, "ok"),  # a logo covers 7 %
        # scanned: an image covers the page, the text layer is an old OCR
        ("pypdf_Seige_of_Vicksburg_Sample_OCR.pdf", 1, "scanned_image"),
        ("pypdf_Seige_of_Vicksburg_Sample_OCR.pdf", 6, "scanned_image"),
        ("pdfjs_freeculture.pdf", 255, "scanned_image"),  # a full-page figure and a caption
        # image-only scans and empty pages
        ("ocrmypdf_c02-22.pdf", 1, "no_text_layer"),
        ("ocrmypdf_linn.pdf", 1, "no_text_layer"),
        ("pdfjs_vertical.pdf", 2, "no_text_layer"),
        # broken or unusable text layers
        ("samplefiles_GeoTopo-komprimiert.pdf", 85, "unprintable"),  # math font glyphs
        ("samplefiles_habibi-rotated.pdf", 1, "unprintable"),  # Arabic shaping to \x03, mojibake
        ("pdfjs_freeculture.pdf", 30, "few_letters"),  # a barcode set in a dingbat font
        ("samplefiles_GeoTopo-komprimiert.pdf", 1, "too_sparse"),  # title page
        ("pdfjs_vertical.pdf", 1, "too_sparse"),
    ],
)
def test_text_layer_usable_on_corpus_pages(pdfs, name, page, expected):
    usable, reason = _usable(pdfs, name, page)
    assert reason == expected
    assert usable == (expected == "ok")


def test_text_layer_usable_reasons_and_limits():
    prose = "The quick brown fox jumps over the lazy dog. " * 10  # 360 non-space chars
    assert text_layer_usable(prose, W, H, 0.0) == (True, "ok")
    assert text_layer_usable(prose, W, H, None) == (True, "ok")  # coverage not measured
    assert text_layer_usable(None, W, H, 0.0) == (False, "no_text_layer")
    assert text_layer_usable(" \n\t", W, H, 0.0) == (False, "no_text_layer")
    assert text_layer_usable(prose, W, H, 0.5) == (False, "scanned_image")
    assert text_layer_usable(prose, W, H, 0.49) == (True, "ok")
    assert text_layer_usable(prose + "(cid:12)", W, H, 0.0) == (False, "cid_glyphs")
    assert text_layer_usable(prose + "\ufffd", W, H, 0.0) == (False, "replacement_chars")
    assert text_layer_usable(prose + "\x07" * 8, W, H, 0.0) == (False, "unprintable")
    assert text_layer_usable(prose + "\ue000" * 8, W, H, 0.0) == (False, "unprintable")
    # pdfium's hyphenation marker is not a broken character
    assert text_layer_usable(prose.replace("jumps", "ju\x02mps"), W, H, 0.0) == (True, "ok")
    assert text_layer_usable("❚❘❙" * 100 + prose[:60], W, H, 0.0) == (False, "few_letters")
    dots = "\n".join(f"Chapter {i} " + ". " * 30 + str(i * 9) for i in range(1, 12))
    assert text_layer_usable(dots, W, H, 0.0) == (True, "ok")  # dot leaders are fine
    need = min_text_layer_chars(W, H)
    assert need == round(MIN_CHARS_PER_SQUARE_PAGE * W * H / H**2)
    assert text_layer_usable("a" * need, W, H, 0.0) == (True, "ok")
    assert text_layer_usable("a" * (need - 1), W, H, 0.0) == (False, "too_sparse")
    # the same characters on a page of the same shape at another resolution
    assert min_text_layer_chars(W * 2, H * 2) == need


def test_clean_text_layer():
    raw = "Trace com\x02pilation\r\nis \x0cfast\ue000.  \n\n e\u0301t\u00e9 "
    assert clean_text_layer(raw) == "Trace compilation\nis fast.\n\n \u00e9t\u00e9"


# ------------------------------------------------------------------ image coverage


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF from object bodies (object 1 is the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


_IMAGE = _stream(
    b"\x00\xff\xff\x00",
    b"/Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray "
    b"/BitsPerComponent 8",
)


def _pdf_with(content: bytes, form: bytes | None = None, media=b"[0 0 200 200]") -> bytes:
    """One 200 x 200 pt page drawing `content`, with image /Im0 and (optionally) a form /Fm0
    that draws /Im0 itself."""
    resources = b"/XObject << /Im0 4 0 R /Fm0 5 0 R >>"
    form = form or b"q Q"
    form_obj = _stream(
        form,
        b"/Type /XObject /Subtype /Form /BBox [0 0 200 200] /Matrix [0.5 0 0 0.5 0 0] "
        b"/Resources << /XObject << /Im0 4 0 R >> >>",
    )
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox "
            + media
            + b" /Contents 6 0 R /Resources << "
            + resources
            + b" >> >>",
            _IMAGE,
            form_obj,
            _stream(content),
        ]
    )


@pytest.mark.parametrize(
    ("content", "form", "expected"),
    [
        (b"q Q", None, 0.0),  # no image
        (b"q 200 0 0 200 0 0 cm /Im0 Do Q", None, 1.0),  # a full-page scan
        (b"q 100 0 0 100 0 0 cm /Im0 Do Q", None, 0.25),
        (b"q 400 0 0 400 -100 -100 cm /Im0 Do Q", None, 1.0),  # beyond the page: clipped
        (b"q 100 0 0 100 300 300 cm /Im0 Do Q", None, 0.0),  # off the page
        # two overlapping images: the union (0.25 + 0.25 - 0.0625), not the sum
        (
            b"q 100 0 0 100 0 0 cm /Im0 Do Q q 100 0 0 100 50 50 cm /Im0 Do Q",
            None,
            0.4375,
        ),
        # inside a form scaled by its /Matrix (0.5) and moved by the CTM at Do: 50 x 50 at
        # (50, 50); pdfium reports the inner bounds in the form's space
        (b"q 1 0 0 1 50 50 cm /Fm0 Do Q", b"q 100 0 0 100 0 0 cm /Im0 Do Q", 0.0625),
        (b"q 2 0 0 2 0 0 cm /Fm0 Do Q", b"q 200 0 0 200 0 0 cm /Im0 Do Q", 1.0),
        # an inline image (BI ... ID ... EI) filling half the page
        (b"q 200 0 0 100 0 0 cm BI /W 1 /H 1 /CS /G /BPC 8 ID \x80 EI Q", None, 0.5),
    ],
)
def test_image_coverage_on_generated_pdfs(content, form, expected):
    assert image_coverage(_pdf_with(content, form), 1) == pytest.approx(expected, abs=0.01)


def _nested_forms_pdf(outer_cm: bytes, form1_matrix: bytes) -> bytes:
    """A 150 x 200 pt page: Fm1 (drawn under `outer_cm`, with `form1_matrix`) draws Fm2 moved
    50 pt right; Fm2 draws a 50 x 50 pt image at its origin."""
    form2 = _stream(
        b"q 50 0 0 50 0 0 cm /Im0 Do Q",
        b"/Type /XObject /Subtype /Form /BBox [0 0 1000 1000] "
        b"/Resources << /XObject << /Im0 4 0 R >> >>",
    )
    form1 = _stream(
        b"q 1 0 0 1 50 0 cm /Fm2 Do Q",
        b"/Type /XObject /Subtype /Form /BBox [0 0 1000 1000] /Matrix "
        + form1_matrix
        + b" /Resources << /XObject << /Fm2 7 0 R >> >>",
    )
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 150 200] /Contents 6 0 R "
            b"/Resources << /XObject << /Fm1 5 0 R >> >> >>",
            _IMAGE,
            form1,
            _stream(b"q " + outer_cm + b" cm /Fm1 Do Q"),
            form2,
        ]
    )


@pytest.mark.parametrize(
    ("outer_cm", "form1_matrix"),
    [(b"2 0 0 2 0 0", b"[1 0 0 1 0 0]"), (b"1 0 0 1 0 0", b"[2 0 0 2 0 0]")],
)
def test_image_coverage_composes_nested_forms_in_order(outer_cm, form1_matrix):
    """Inner move first, then the outer scale: the image lands at x 100..200, y 0..100, half
    of it on the 150 pt wide page (1/6 of the page). Scaling first would give 50..150 (1/3)."""
    data = _nested_forms_pdf(outer_cm, form1_matrix)
    assert image_coverage(data, 1) == pytest.approx(50 * 100 / (150 * 200), abs=0.01)


def test_image_coverage_uses_the_crop_box_and_checks_the_page_number():
    data = _pdf_with(b"q 100 0 0 100 0 0 cm /Im0 Do Q", media=b"[0 0 100 100]")
    assert image_coverage(data, 1) == pytest.approx(1.0)
    with pytest.raises(IndexError):
        image_coverage(data, 2)


def test_image_coverage_on_corpus_pdfs(corpus):
    good, bad = corpus / "pdf" / "good", corpus / "pdf" / "bad"
    assert image_coverage((good / "ocrmypdf_c02-22.pdf").read_bytes(), 1) == pytest.approx(1.0)
    # the poster's image spans 635..2965 of its 3600 pt height
    poster = image_coverage((good / "ocrmypdf_poster.pdf").read_bytes(), 1)
    assert poster == pytest.approx(2330 / 3600, abs=0.01)
    # /Rotate 90 and a skewed image larger than the page
    assert image_coverage((good / "ocrmypdf_rotated_skew.pdf").read_bytes(), 1) == 1.0
    assert image_coverage((good / "pdfjs_tracemonkey.pdf").read_bytes(), 1) == 0.0
    assert 0.0 < image_coverage((good / "pdfjs_tracemonkey.pdf").read_bytes(), 2) < 0.1
    locked = (bad / "samplefiles_libreoffice-writer-password.pdf").read_bytes()
    assert image_coverage(locked, 1, password="openpassword") == 0.0


# ------------------------------------------------------------------ agreement


def _naive_levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_levenshtein_matches_the_dp_table():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("", "") == 0
    rng = random.Random(0)
    for _ in range(600):
        alphabet = rng.choice(["ab", "abc ", "aé日 x"])
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        assert levenshtein(a, b) == _naive_levenshtein(a, b), (a, b)
    # long enough for the bit vectors to span many machine words
    a = "".join(rng.choice("abcd") for _ in range(300))
    b = "".join(c if rng.random() > 0.1 else "x" for c in a)[5:] + "yz"
    assert levenshtein(a, b) == _naive_levenshtein(a, b)


def test_text_layer_agreement_values():
    layer = "Trace-based Just-in-Time Type Specialization\nfor Dynamic Languages"
    assert text_layer_agreement(layer, layer) == 1.0
    # whitespace only: reflowed lines, doubled spaces, trailing newlines
    assert text_layer_agreement(" ".join(layer.split()) + "\n\n", layer) == 1.0
    # a word hyphenated across a line: pdfium's U+0002 marker and the OCR's "-\n"
    assert text_layer_agreement("we com-\npile it", "we com\x02pile it") == 1.0
    assert text_layer_agreement("", "") == 1.0
    assert text_layer_agreement("anything", "") == 0.0
    assert text_layer_agreement("", layer) == 0.0
    assert text_layer_agreement("x" * 500, "abc") == 0.0  # clamped, not negative
    ref = "abcdefghij" * 100
    ocr = "".join("#" if i % 100 == 0 else c for i, c in enumerate(ref))  # 10 substitutions
    assert text_layer_agreement(ocr, ref) == pytest.approx(0.99)
    # CER is over the reference (the text layer): 10 extra characters in 1000
    assert text_layer_agreement(ref + "0123456789", ref) == pytest.approx(0.99)


def test_text_layer_agreement_on_a_corpus_page_is_fast(pdfs):
    layer = _render(pdfs, "pdfjs_tracemonkey.pdf", 4).text_layer
    assert len(layer) > 5000
    rng = random.Random(1)
    chars = list(layer)
    for i in rng.sample(range(len(chars)), 100):
        chars[i] = "#"  # 100 substitutions
    ocr = "\n".join(" ".join("".join(chars).split()).split(". "))  # reflowed
    started = time.perf_counter()
    agreement = text_layer_agreement(ocr, layer)
    elapsed = time.perf_counter() - started
    reference_len = len(normalize_for_comparison(layer))
    # each substitution costs at most 1; "#" on a space or a hyphenation marker may cost 2
    assert 1 - 200 / reference_len <= agreement <= 1 - 80 / reference_len
    assert elapsed < 0.5, elapsed  # ~10 ms measured on 2 cores


# ------------------------------------------------------------------ degenerate answers

PARA = (
    "Trace trees are a natural fit for dynamic languages because they record the types "
    "seen at run time. "
)
PROSE = (
    "We present an alternative compilation technique for dynamically-typed languages that "
    "identifies frequently executed loop traces at run-time and then generates machine code "
    "on the fly that is specialized for the actual dynamic types occurring on each path "
    "through the loop. Our method provides cheap inter-procedural type specialization, and "
    "an elegant and efficient way of incrementally compiling lazily discovered alternative "
    "paths through nested loops. We have implemented a dynamic compiler for JavaScript based "
    "on our technique and we have measured speedups of 10x and more for certain benchmark "
    "programs."
)
TABLE = "| Name | Age | City |\n|---|---|---|\n" + "\n".join(
    f"| {name} | {age} | {city} |"
    for name, age, city in [
        ("Ada", 36, "London"),
        ("Grace", 85, "Arlington"),
        ("Alan", 41, "Wilmslow"),
        ("Edsger", 72, "Nuenen"),
        ("Barbara", 82, "Los Angeles"),
        ("Donald", 30, "Stanford"),
        ("Frances", 27, "Boston"),
        ("Niklaus", 40, "Zurich"),
        ("Tony", 91, "Oxford"),
        ("John", 64, "Budapest"),
    ]
)
LAB = "| Sample | A | B |\n|---|---|---|\n" + "\n".join(
    f"| Sample {i} | {0.4 + ((i * 37) % 23) / 100:.2f} | {0.6 - ((i * 11) % 17) / 100:.2f} |"
    for i in range(1, 60)
)

LOOPS = {
    # (text, finish_reason, rule)
    "sentence loop, cut off": (PARA + "The quick brown fox jumps. " * 100, "length", "cut_off"),
    "word loop, cut off": (PARA * 3 + "the " * 300, "length", "cut_off"),
    "long paragraph loop, cut off": (
        PARA * 2 + (PARA.upper() + "And again. ") * 6,
        "length",
        "cut_off",
    ),
    "empty cells, cut off": (PARA + "| | | |\n" * 500, "length", "cut_off"),
    "html cells, cut off": (PARA + "<td></td>" * 300, "length", "cut_off"),
    "CJK character, cut off": ("第一章 总则\n" + "的" * 500, "length", "cut_off"),
    "line loop, model stopped": (
        PARA * 5 + "\n".join(["| Total | 12 | 13 |"] * 30),
        "stop",
        "at_end",
    ),
    "CJK phrase, model stopped": ("第一章 总则\n" + "我们的目标 " * 100, "stop", "at_end"),
    "loop dominating the answer": (
        "# Title\n\n" + "Lorem ipsum dolor sit amet. " * 60 + "\n\n" + PARA * 3,
        "stop",
        "dominant",
    ),
    "loop in the middle": (PARA * 30 + "foo bar baz. " * 40 + PARA * 30, "stop", "anywhere"),
    "counting on, cut off": (
        PARA + "\n".join(f"Item {i}" for i in range(1, 300)),
        "length",
        "counting",
    ),
}


@pytest.mark.parametrize("name", LOOPS)
def test_repetition_loops_are_found(name):
    text, finish, rule = LOOPS[name]
    loop = find_repetition(text, finish)
    assert loop is not None and loop.rule == rule, loop
    assert loop.span > 0 and loop.repeats >= 3
    assert "repetition" in quality_flags(text, finish, blank=False)


NOT_LOOPS = {
    "markdown table": TABLE,
    "wide table separator": "| a | b | c | d | e | f | g | h | i | j | k | l |\n"
    + "|---" * 12
    + "|\n| 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11 | 12 |",
    "separator row last": "| a | b | c | d | e | f | g | h | i | j |\n" + "| --- " * 10 + "|",
    "list bullets": "\n".join(
        f"- item {w}" for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")
    ),
    "numbered list": "\n".join(f"{i}. Step {w}" for i, w in enumerate("abcdefghijklmn", 1)),
    "table of contents with leaders": "\n".join(
        f"Chapter {i} {'.' * 60} {i * 7}" for i in range(1, 15)
    ),
    "dot leader": "Index" + "." * 200 + "12",
    "underscores": "Name: ________________ Date: __________\n" * 3,
    "laughter": "He said: ha ha ha ha. " + PARA,
    "rules between parts": "Part one\n\n---\n\n" * 5 + "Part two",
    "six identical rows, then more": "| Q | A | B |\n|---|---|---|\n"
    + "| N/A | N/A | N/A |\n" * 6
    + "| Total | 3 | 4 |",
    "numeric table": LAB,
    "prose": PROSE,
    # a lettered line repeated five times (under LOOP_MIN_REPEATS) over 250 characters
    "five signature lines": "Witnesses:\n"
    + "Signed: ______________________ Date: ____________\n" * 5
    + "Sworn before me this day.",
}


@pytest.mark.parametrize("name", NOT_LOOPS)
@pytest.mark.parametrize("finish", ["stop", "length"])
def test_repeated_markup_in_real_pages_is_not_a_loop(name, finish):
    text = NOT_LOOPS[name]
    assert find_repetition(text, finish) is None
    assert "repetition" not in quality_flags(text, finish, blank=False)


MARKUP_RUNS = {
    "empty checkboxes": "Checklist\n" + "- [ ] \n" * 30,
    "empty form rows": "| Date | Hours | Signature |\n|---|---|---|\n" + "|  |  |  |\n" * 40,
    "dot leader": "Index" + "." * 200,
    "six identical rows": "| Q | A | B |\n|---|---|---|\n" + "| N/A | N/A | N/A |\n" * 6,
}


@pytest.mark.parametrize("name", MARKUP_RUNS)
def test_repeated_markup_ending_an_answer_is_a_loop_only_when_cut_off(name):
    """Empty cells, checkboxes, leaders or a few identical rows are what some pages hold: a
    loop only if the answer ran out of tokens inside them (then it can't be told apart)."""
    text = MARKUP_RUNS[name]
    assert find_repetition(text, "stop") is None
    assert find_repetition(text, "length").rule == "cut_off"
    # the model closing the block itself is no cut-off loop
    assert find_repetition(text + "\n\nEnd of form.", "length") is None


def test_counting_needs_only_counters_to_change():
    # the lab table's rows differ in data, not just a counter: no loop even when cut off
    assert find_repetition(LAB, "length") is None
    years = "\n".join(f"| {y} | n/a | see note |" for y in range(1950, 2000))
    assert find_repetition(years, "length").rule == "counting"
    assert find_repetition(years, "stop") is None


def test_corpus_text_layers_are_not_loops(pdfs):
    """Real pages' text (every page of these PDFs), as if it were the answer, cut off or not."""
    for name in (
        "pdfjs_tracemonkey.pdf",
        "samplefiles_multicolumn.pdf",
        "pdfjs_prefilled_f1040.pdf",
        "pdfjs_XiaoBiaoSong.pdf",
        "pypdf_Seige_of_Vicksburg_Sample_OCR.pdf",
    ):
        doc = pdfs(name)
        for i in range(len(doc)):
            textpage = doc[i].get_textpage()
            text = textpage.get_text_bounded()
            textpage.close()
            for finish in ("stop", "length"):
                assert find_repetition(text, finish) is None, (name, i + 1, finish)


def test_find_repetition_is_fast_on_long_answers(pdfs):
    doc = pdfs("pdfjs_tracemonkey.pdf")
    text = ""
    for i in range(len(doc)):
        textpage = doc[i].get_textpage()
        text += textpage.get_text_bounded()
        textpage.close()
    text = text[:30_000]
    started = time.perf_counter()
    for finish in ("stop", "length"):
        assert find_repetition(text, finish) is None
    assert time.perf_counter() - started < 2.0  # ~0.1 s measured on 2 cores


def test_quality_flags():
    assert quality_flags(PARA, "stop", blank=False) == []
    assert quality_flags(PARA, "length", blank=False) == ["length"]
    assert quality_flags(PARA + "the " * 300, "length", blank=False) == ["repetition", "length"]
    for empty in ("", "  \n", None, "```markdown\n```", "```\n\n```\n"):
        assert quality_flags(empty, "stop", blank=False) == ["empty"]
        assert quality_flags(empty, "stop", blank=True) == []  # blank pages have no text
    assert quality_flags("", "length", blank=False) == ["length", "empty"]
    assert quality_flags("```markdown\n# Title\n```", "stop", blank=False) == []
    assert quality_flags(PARA, None, blank=False) == []


# ------------------------------------------------------------------ retries


def test_retry_temperature_rises_and_is_capped():
    temps = [retry_temperature(a) for a in range(8)]
    assert temps[:5] == [0.0, 0.5, 0.7, 0.9, 1.0]
    assert temps == sorted(temps) and max(temps) == RETRY_MAX_TEMPERATURE
    with pytest.raises(ValueError):
        retry_temperature(-1)


def test_better_answer():
    looping = Answer.of(PARA + "the " * 300, "length")
    cut = Answer.of(PROSE * 2, "length", attempt=1)
    clean = Answer.of(PARA + PROSE, "stop", attempt=2)
    empty = Answer.of("", "stop", attempt=3)
    assert looping.flags == ("repetition", "length") and cut.flags == ("length",)
    assert clean.flags == () and empty.flags == ("empty",)
    # fewer flags first, whatever the order and the length
    assert better_answer(looping, cut) is cut and better_answer(cut, looping) is cut
    assert better_answer(cut, clean) is clean and better_answer(clean, cut) is clean
    assert better_answer(empty, looping) is empty  # one flag beats two
    # same flags: more text that isn't a loop
    short = Answer.of(PARA, "stop", attempt=1)
    assert better_answer(short, clean) is clean and better_answer(clean, short) is clean
    loop_a = Answer.of(PARA + "la " * 400, "length")
    loop_b = Answer.of(PROSE + "la " * 50, "length", attempt=1)
    assert loop_a.flags == loop_b.flags == ("repetition", "length")
    assert len(loop_a.text) > len(loop_b.text)
    assert useful_length(loop_a.text, "length") < useful_length(loop_b.text, "length")
    assert better_answer(loop_a, loop_b) is loop_b and better_answer(loop_b, loop_a) is loop_b
    # a tie keeps the first (earlier) answer
    again = Answer.of(PARA + PROSE, "stop", attempt=4)
    assert better_answer(clean, again) is clean and better_answer(again, clean) is again


# ------------------------------------------------------------------ decision per page


def test_decide_page():
    prose = PARA * 5
    common = dict(width_px=W, height_px=H, image_coverage=0.0)
    for policy in TEXT_LAYER_POLICIES:
        d = decide_page(policy, blank=True, text_layer=None, **common)
        assert (d.text_source, d.call_model, d.rule) == ("blank", False, "blank")
    d = decide_page("prefer", blank=False, text_layer=prose, **common)
    assert (d.text_source, d.call_model, d.rule) == ("text_layer", False, "text_layer")
    d = decide_page("prefer", blank=False, text_layer=prose, width_px=W, height_px=H,
                    image_coverage=1.0)  # fmt: skip
    assert (d.text_source, d.call_model, d.rule) == ("model", True, "scanned_image")
    d = decide_page("compare", blank=False, text_layer=prose, **common)
    assert (d.text_source, d.call_model, d.compare) == ("model", True, True)
    assert not decide_page("compare", blank=False, text_layer=None, **common).compare
    d = decide_page("ocr", blank=False, text_layer=prose, **common)
    assert (d.text_source, d.call_model, d.rule, d.compare) == ("model", True, "policy_ocr", False)
    with pytest.raises(ValueError):
        decide_page("always", blank=False, text_layer=None, **common)
