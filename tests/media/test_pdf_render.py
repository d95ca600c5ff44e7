"""pdf_render: page sizing, opening (encrypted, broken) PDFs, rendering pages and images."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.errors import (
    DegeneratePage,
    EncryptedPdf,
    InvalidImage,
    InvalidPdf,
    NoPages,
    PageTooLarge,
)
from vlbeam.transforms.media import pdf_render
from vlbeam.transforms.media.pdf_render import (
    count_pages,
    encode_image,
    open_pdf,
    render_image,
    render_pdf_page,
    saslprep,
    target_size,
)

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SASLPREP_PASSWORD = "S\u00aaSL\u00adprep"  # 'SªSL<soft hyphen>prep' → SASLprep → 'SaSLprep'
CFG = RenderConfig()


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _open(path: Path, password: str | None = None):
    data = path.read_bytes()
    return open_pdf(data, password), data


# ---------------------------------------------------------------- target_size


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (612, 792, (995, 1288)),  # letter portrait
        (792, 612, (1288, 995)),  # letter landscape
        (595.276, 841.89, (911, 1288)),  # A4
        (2160, 2160, (1288, 1288)),  # square
        (100, 50, (1288, 644)),  # small sizes scale up to the target
    ],
)
def test_target_size_long_side_is_the_target(width, height, expected) -> None:
    assert target_size(width, height, CFG) == expected


def test_target_size_follows_target_long_side() -> None:
    cfg = RenderConfig(target_long_side=512)
    assert target_size(1800, 3600, cfg) == (256, 512)


def test_target_size_pixel_cap_scales_down() -> None:
    cfg = RenderConfig(target_long_side=4096, max_pixels=1_000_000)
    w, h = target_size(1800, 3600, cfg)
    assert max(w, h) < 4096
    assert w * h == pytest.approx(1_000_000, rel=0.005)
    assert h / w == pytest.approx(2.0, abs=0.01)
    # Below the cap, the cap changes nothing.
    assert target_size(1800, 3600, RenderConfig(target_long_side=1000)) == (500, 1000)


def test_target_size_never_exceeds_the_pixel_cap() -> None:
    cfg = RenderConfig(target_long_side=4096, max_pixels=1_000_000)
    for width, height in [(612, 792), (333, 777), (1000, 1000), (595.276, 841.89)]:
        w, h = target_size(width, height, cfg)
        assert w * h <= cfg.max_pixels, (width, height, w, h)


def test_target_size_short_side_threshold() -> None:
    assert target_size(28, 1288, CFG) == (28, 1288)
    with pytest.raises(DegeneratePage, match="aspect ratio of 48:1"):
        target_size(27, 1288, CFG)
    with pytest.raises(DegeneratePage, match="under 28 px"):
        target_size(10000, 1, CFG)


@pytest.mark.parametrize(
    ("width", "height"),
    [(0, 792), (612, 0), (0, 0), (-612, 792), (math.nan, 792), (612, math.inf), (math.inf, 1)],
)
def test_target_size_no_area_raises(width, height) -> None:
    with pytest.raises(DegeneratePage, match="no area"):
        target_size(width, height, CFG)


@pytest.mark.parametrize(("width", "height"), [(2e6, 10), (595, 2147483648.0), (1.5e6, 1.5e6)])
def test_target_size_absurd_page_raises(width, height) -> None:
    with pytest.raises(PageTooLarge, match="beyond any real page"):
        target_size(width, height, CFG)


# ---------------------------------------------------------------- open_pdf / count_pages


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("zero_bytes.pdf", "file is empty"),
        ("tracemonkey_truncated_50pct.pdf", "truncated or damaged"),
        ("ocrmypdf_invalid.pdf", "structure"),
        ("qpdf_empty_zero_pages.pdf", "structure"),  # pdfium refuses /Count 0 outright
        ("pdfjs_Brotli-Prototype-FileA.pdf", "structure"),
    ],
)
def test_open_pdf_unreadable_files(corpus: Path, name: str, message: str) -> None:
    data = (corpus / "pdf/bad" / name).read_bytes()
    with pytest.raises(InvalidPdf, match=message):
        open_pdf(data)
    with pytest.raises(InvalidPdf, match=message):  # a password doesn't change the verdict
        open_pdf(data, "openpassword")


def test_open_pdf_with_user_password(corpus: Path) -> None:
    data = (corpus / "pdf/bad/samplefiles_libreoffice-writer-password.pdf").read_bytes()
    with pytest.raises(EncryptedPdf, match="pass --pdf-password"):
        open_pdf(data)
    with pytest.raises(EncryptedPdf, match="password is wrong"):
        open_pdf(data, "permission")
    doc = open_pdf(data, "openpassword")
    try:
        assert len(doc) == 1
    finally:
        doc.close()
    assert count_pages(data, "openpassword") == 1


def test_saslprep_mapping() -> None:
    assert saslprep(SASLPREP_PASSWORD) == "SaSLprep"  # soft hyphen dropped, ª → a (NFKC)
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space → space
    assert saslprep("plain") == "plain"


def test_open_pdf_aes256_needs_saslprep(corpus: Path) -> None:
    data = (corpus / "pdf/bad/pdfjs_saslprep-r6.pdf").read_bytes()
    # pdfium alone does not prepare the password: the raw form is refused...
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(data, password=SASLPREP_PASSWORD)
    # ...open_pdf also tries the SASLprep form.
    assert count_pages(data, SASLPREP_PASSWORD) == 1
    assert count_pages(data, "SaSLprep") == 1
    with pytest.raises(EncryptedPdf, match="pass --pdf-password"):
        count_pages(data)
    with pytest.raises(EncryptedPdf, match="wrong"):
        count_pages(data, "openpassword")


def test_open_pdf_owner_only_encryption_needs_no_password(corpus: Path) -> None:
    data = (corpus / "pdf/bad/pdfjs_empty_protected.pdf").read_bytes()
    assert b"/Encrypt" in data
    assert count_pages(data) == 1
    assert count_pages(data, "irrelevant") == 1


def test_open_pdf_junk_before_header(corpus: Path) -> None:
    data = (corpus / "pdf/bad/pdfjs_issue6069.pdf").read_bytes()
    assert not data.startswith(b"%PDF-")
    assert count_pages(data) == 1


def test_count_pages_matches_manifest(corpus: Path) -> None:
    with open(corpus / "MANIFEST.tsv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle, delimiter="\t") if r["category"] == "pdf-good"]
    assert len(rows) >= 10
    for row in rows:
        assert count_pages((corpus / row["path"]).read_bytes()) == int(row["pdf_pages"]), row[
            "path"
        ]


def test_count_pages_zero_pages_raises_no_pages(monkeypatch) -> None:
    # pdfium itself refuses 0-page files (see above); the guard still has to hold.
    class _EmptyDoc:
        closed = False

        def __len__(self) -> int:
            return 0

        def close(self) -> None:
            self.closed = True

    doc = _EmptyDoc()
    monkeypatch.setattr(pdf_render, "open_pdf", lambda data, password=None, path=None: doc)
    with pytest.raises(NoPages):
        pdf_render.count_pages(b"%PDF-1.7")
    assert doc.closed


# ---------------------------------------------------------------- render_pdf_page


def test_render_rotated_pages(corpus: Path) -> None:
    # /Rotate 90, 180, 270, 360 on A4 portrait pages.
    doc, _data = _open(corpus / "pdf/good/samplefiles_habibi-rotated.pdf")
    cfg = RenderConfig(target_long_side=400)
    try:
        sizes = [render_pdf_page(doc, n, cfg) for n in range(1, 5)]
    finally:
        doc.close()
    landscape, portrait = (400, 283), (283, 400)
    for page, expected in zip(sizes, [landscape, portrait, landscape, portrait], strict=True):
        assert (page.width_px, page.height_px) == pytest.approx(expected, abs=1)
        assert _decode(page.image).size == (page.width_px, page.height_px)
        assert page.text_layer is not None and "habibi" in page.text_layer


def test_render_rotate_90_scan(corpus: Path) -> None:
    # MediaBox 792x612 (landscape) with /Rotate 90: displayed portrait.
    doc, _data = _open(corpus / "pdf/good/ocrmypdf_rotated_skew.pdf")
    try:
        page = render_pdf_page(doc, 1, RenderConfig(target_long_side=300))
    finally:
        doc.close()
    assert (page.width_px, page.height_px) == pytest.approx((232, 300), abs=1)
    assert page.text_layer is None


@pytest.mark.parametrize(
    ("rel", "page_number"),
    [
        ("pdf/good/samplefiles_habibi-rotated.pdf", 1),
        ("pdf/good/samplefiles_habibi-rotated.pdf", 2),
        ("pdf/good/samplefiles_habibi-rotated.pdf", 3),
        ("pdf/good/samplefiles_habibi-rotated.pdf", 4),
        ("pdf/good/ocrmypdf_rotated_skew.pdf", 1),
        ("pdf/good/pdfjs_vertical.pdf", 2),
        ("pdf/bad/pdfjs_issue6069.pdf", 1),
    ],
)
def test_pdf2image_gives_the_same_size_as_pypdfium2(corpus: Path, rel: str, page_number) -> None:
    doc, _data = _open(corpus / rel)
    try:
        by_pdfium = render_pdf_page(doc, page_number, RenderConfig(target_long_side=300))
        by_poppler = render_pdf_page(
            doc,
            page_number,
            RenderConfig(target_long_side=300, renderer="pdf2image"),
            str(corpus / rel),
        )
    finally:
        doc.close()
    # pdfium rounds up; vlbeam trims that, so both renderers give the very same size
    assert (by_poppler.width_px, by_poppler.height_px) == (by_pdfium.width_px, by_pdfium.height_px)
    assert _decode(by_poppler.image).size == (by_poppler.width_px, by_poppler.height_px)


def test_pdf2image_with_password(corpus: Path) -> None:
    doc, _data = _open(
        corpus / "pdf/bad/samplefiles_libreoffice-writer-password.pdf", "openpassword"
    )
    cfg = RenderConfig(target_long_side=200, renderer="pdf2image", password="openpassword")
    try:
        page = render_pdf_page(
            doc, 1, cfg, str(corpus / "pdf/bad/samplefiles_libreoffice-writer-password.pdf")
        )
    finally:
        doc.close()
    assert max(page.width_px, page.height_px) == pytest.approx(200, abs=1)


def test_text_layer_born_digital_vs_scanned() -> None:
    doc, _data = _open(SAMPLES / "born_digital.pdf")
    try:
        page = render_pdf_page(doc, 1, RenderConfig(target_long_side=256))
        no_text = render_pdf_page(
            doc, 1, RenderConfig(target_long_side=256, extract_text_layer=False)
        )
    finally:
        doc.close()
    assert page.text_layer is not None
    assert "born-digital" in page.text_layer
    assert "\r" not in page.text_layer
    assert page.text_layer == page.text_layer.strip()
    assert no_text.text_layer is None

    doc, _data = _open(SAMPLES / "scanned_page.pdf")
    try:
        scanned = render_pdf_page(doc, 1, RenderConfig(target_long_side=256))
    finally:
        doc.close()
    assert scanned.text_layer is None


def test_render_output_is_an_rgb_image_of_the_given_format() -> None:
    doc, _data = _open(SAMPLES / "born_digital.pdf")
    try:
        for fmt, pil_format in [("png", "PNG"), ("webp", "WEBP"), ("jpeg", "JPEG")]:
            page = render_pdf_page(doc, 1, RenderConfig(target_long_side=256, image_format=fmt))
            image = _decode(page.image)
            assert page.image_format == fmt
            assert (image.format, image.mode) == (pil_format, "RGB")
            assert image.size == (page.width_px, page.height_px) == (198, 256)
    finally:
        doc.close()


def test_render_page_out_of_range(corpus: Path) -> None:
    doc, _data = _open(corpus / "pdf/good/samplefiles_habibi-rotated.pdf")
    try:
        with pytest.raises(InvalidPdf, match="page 5 cannot be loaded"):
            render_pdf_page(doc, 5, CFG)
    finally:
        doc.close()


def test_render_absurd_mediabox_is_page_too_large(corpus: Path) -> None:
    # Fuzzed file with a MediaBox height of 2^31 points.
    doc, _data = _open(corpus / "pdf/bad/pdfjs_poppler-85140-0.pdf")
    try:
        with pytest.raises(PageTooLarge):
            render_pdf_page(doc, 1, CFG)
    finally:
        doc.close()


# ---------------------------------------------------------------- render_image


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP"])
def test_render_image_downscales_to_target(fmt: str) -> None:
    page = render_image(_encoded(Image.new("RGB", (3000, 2000), "white"), fmt), CFG)
    assert (page.width_px, page.height_px) == pytest.approx((1288, 859), abs=1)
    assert page.text_layer is None
    assert _decode(page.image).size == (page.width_px, page.height_px)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP"])
def test_render_image_never_upscales(fmt: str) -> None:
    page = render_image(_encoded(Image.new("RGB", (300, 200), "white"), fmt), CFG)
    assert (page.width_px, page.height_px) == (300, 200)


def test_render_image_narrow_image_is_downscaled() -> None:
    page = render_image(_encoded(Image.new("RGB", (50, 1300), "white"), "PNG"), CFG)
    assert max(page.width_px, page.height_px) == 1288


def test_render_image_to_rgb() -> None:
    for mode in ("RGBA", "L", "P", "1"):
        page = render_image(_encoded(Image.new(mode, (64, 48)), "PNG"), CFG)
        assert _decode(page.image).mode == "RGB", mode


def test_render_image_applies_exif_orientation() -> None:
    # Stored 400x200 with a red top-left corner; EXIF 6 = "rotate 90° clockwise to display".
    raw = Image.new("RGB", (400, 200), "white")
    raw.paste((255, 0, 0), (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("JPEG", "PNG"):
        page = render_image(_encoded(raw, fmt, exif=exif), CFG)
        shown = _decode(page.image)
        assert (page.width_px, page.height_px) == (200, 400), fmt
        r, g, b = shown.getpixel((190, 10))  # red is now top-right
        assert r > 200 and g < 60 and b < 60, fmt
        assert shown.getpixel((10, 10))[1] > 200, fmt  # top-left is white


def test_render_image_large_jpeg_with_exif_orientation() -> None:
    # The JPEG draft (reduced decode) happens before the EXIF transpose.
    exif = Image.Exif()
    exif[0x0112] = 8
    page = render_image(_encoded(Image.new("RGB", (4000, 3000), "gray"), "JPEG", exif=exif), CFG)
    assert (page.width_px, page.height_px) == pytest.approx((966, 1288), abs=1)


def test_render_image_first_frame_of_multipage_tiff() -> None:
    first = Image.new("RGB", (300, 200), (255, 0, 0))
    second = Image.new("RGB", (500, 500), (0, 0, 255))
    data = _encoded(first, "TIFF", save_all=True, append_images=[second])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    page = render_image(data, CFG)
    assert (page.width_px, page.height_px) == (300, 200)
    assert _decode(page.image).getpixel((150, 100)) == (255, 0, 0)


def test_render_image_undecodable() -> None:
    with pytest.raises(InvalidImage, match="cannot decode image"):
        render_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, CFG)
    with pytest.raises(InvalidImage):
        render_image(b"not an image at all", CFG)


def test_render_image_degenerate_aspect() -> None:
    with pytest.raises(DegeneratePage):
        render_image(_encoded(Image.new("L", (5000, 2)), "PNG"), CFG)


# ---------------------------------------------------------------- encode_image


@pytest.mark.parametrize(("fmt", "pil_format"), [("png", "PNG"), ("webp", "WEBP")])
def test_encode_image_lossless_round_trip(fmt: str, pil_format: str) -> None:
    import random

    rng = random.Random(7)
    image = Image.frombytes("RGB", (97, 61), bytes(rng.randrange(256) for _ in range(97 * 61 * 3)))
    decoded = _decode(encode_image(image, fmt))
    assert decoded.format == pil_format
    assert decoded.convert("RGB").tobytes() == image.tobytes()


def test_encode_image_jpeg_and_unknown_format() -> None:
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    assert _decode(encode_image(image, "jpeg")).format == "JPEG"
    with pytest.raises(ValueError, match="unknown image format"):
        encode_image(image, "bmp")
