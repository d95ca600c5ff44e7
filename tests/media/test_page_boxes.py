"""Boxes land on the page: a box on the rendered page (as the model gives it, on Qwen3-VL's
0-1000 grid) converts to the PDF-point rectangle of the same words as pdfium has them, on
rotated, cropped and non-square pages; pdfium's text lines come out in the same frame."""

from __future__ import annotations

import ctypes
import io

import numpy as np
import pytest
from PIL import Image

from vlbeam.schemas.config import RenderConfig
from vlbeam.transforms.answers.blocks import GRID, PageFrame, grid_to_page
from vlbeam.transforms.media.pdf_render import display_rect, open_pdf, render_pdf_page, text_lines

PAPER = "pdf/good/pdfjs_tracemonkey.pdf"  # letter, born digital, a text layer
# (rotation, crop box in PDF user space or None)
GEOMETRIES = [
    (0, None),
    (90, None),
    (180, None),
    (270, None),
    (0, (40.0, 300.0, 560.0, 760.0)),  # cropped, wider than tall
    (90, (40.0, 300.0, 560.0, 760.0)),
    (270, (60.0, 80.0, 400.0, 740.0)),  # cropped, narrow and tall, turned
]


def _variant(corpus, tmp_path, rotation, crop):
    """The paper's first page with /Rotate and /CropBox set, saved as a new PDF."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(corpus / PAPER))
    page = doc[0]
    page.set_rotation(rotation)
    if crop is not None:
        page.set_cropbox(*crop)
    path = tmp_path / f"r{rotation}_{crop is not None}.pdf"
    doc.del_page(len(doc) - 1) if len(doc) > 1 else None
    with open(path, "wb") as fh:
        doc.save(fh)
    return path


def _device(page, x, y, width, height):
    """pdfium's own page→device mapping of a user-space point, at 1 device unit per 1/10 pt."""
    import pypdfium2.raw as pdfium_c

    dx, dy = ctypes.c_int(), ctypes.c_int()
    pdfium_c.FPDF_PageToDevice(page, 0, 0, round(width * 10), round(height * 10), 0, x, y, dx, dy)
    return dx.value / 10, dy.value / 10


def _words(page, crop):
    """pdfium's text rectangles that lie inside the crop box."""
    textpage = page.get_textpage()
    try:
        rects = [textpage.get_rect(i) for i in range(textpage.count_rects())]
    finally:
        textpage.close()
    left, bottom, right, top = crop or page.get_cropbox()
    return [r for r in rects if r[0] > left and r[2] < right and r[1] > bottom and r[3] < top
            and r[2] - r[0] > 30]  # fmt: skip


@pytest.mark.parametrize(("rotation", "crop"), GEOMETRIES)
def test_display_rect_agrees_with_pdfiums_own_page_to_device(corpus, tmp_path, rotation, crop):
    path = _variant(corpus, tmp_path, rotation, crop)
    doc = open_pdf(path.read_bytes())
    page = doc[0]
    width, height = page.get_size()  # as displayed
    words = _words(page, crop)
    assert len(words) >= 5
    for rect in words:
        x0, y0, x1, y1 = display_rect(rect, page.get_cropbox(), page.get_rotation())
        corners = [_device(page, x, y, width, height) for x in rect[0::2] for y in rect[1::2]]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        assert (x0, y0, x1, y1) == pytest.approx((min(xs), min(ys), max(xs), max(ys)), abs=0.15)
        assert 0 <= x0 < x1 <= width + 0.01 and 0 <= y0 < y1 <= height + 0.01


@pytest.mark.parametrize(("rotation", "crop"), GEOMETRIES)
def test_a_box_on_the_rendered_page_lands_on_pdfiums_box_for_the_same_words(
    corpus, tmp_path, rotation, crop
):
    """Find each line's ink on the rendered image (what the model sees), write its box on the
    0-1000 grid, convert it to points: it is pdfium's text box of that line, within the slack
    of glyph ink versus font boxes."""
    path = _variant(corpus, tmp_path, rotation, crop)
    cfg = RenderConfig(target_long_side=1600, text_boxes=True)
    doc = open_pdf(path.read_bytes())
    rendered = render_pdf_page(doc, 1, cfg)
    image = np.asarray(Image.open(io.BytesIO(rendered.image)).convert("L"))
    frame = PageFrame(rendered.page_width, rendered.page_height, rendered.page_unit)
    w_px, h_px = rendered.width_px, rendered.height_px
    assert (w_px > h_px) == (frame.width > frame.height)  # the render is the displayed page
    page = doc[0]
    checked = 0
    for line in rendered.text_lines:
        sides = sorted((line.x1 - line.x0, line.y1 - line.y0))
        if sides[1] < 60 or sides[0] < 5:  # long lines only (turned pages: upright)
            continue
        if min(line.x0, line.y0) < 1 or line.x1 > frame.width - 1 or line.y1 > frame.height - 1:
            continue  # cut by the crop box
        # the line's neighbourhood on the image, then the ink inside it
        sx, sy = w_px / frame.width, h_px / frame.height
        pad = 2
        c0, c1 = int(line.x0 * sx) - pad, int(np.ceil(line.x1 * sx)) + pad
        r0, r1 = int(line.y0 * sy) - pad, int(np.ceil(line.y1 * sy)) + pad
        window = image[max(r0, 0) : r1, max(c0, 0) : c1] < 128
        if window.sum() < 20:
            continue
        rows, cols = np.nonzero(window)
        ink = (cols.min() + max(c0, 0), rows.min() + max(r0, 0),
               cols.max() + 1 + max(c0, 0), rows.max() + 1 + max(r0, 0))  # fmt: skip
        grid_box = (ink[0] / w_px * GRID, ink[1] / h_px * GRID,
                    ink[2] / w_px * GRID, ink[3] / h_px * GRID)  # fmt: skip
        got = grid_to_page(grid_box, frame)
        # the line's box as pdfium's page→device mapping places it (not our conversion)
        want = display_rect_by_pdfium(page, line, frame)
        tol = 3.0  # points: glyph ink sits inside the font's ascent/descent box
        # along the line the ink spans the box; across it the ink sits inside the box
        along_x = line.x1 - line.x0 > line.y1 - line.y0
        ends, sides_ = ((0, 2), (1, 3)) if along_x else ((1, 3), (0, 2))
        keys = ("x0", "y0", "x1", "y1")
        for i in ends:
            assert abs(got[keys[i]] - want[i]) < tol, (line, got, want)
        assert want[sides_[0]] - tol < got[keys[sides_[0]]], (line, got, want)
        assert got[keys[sides_[1]]] < want[sides_[1]] + tol, (line, got, want)
        checked += 1
    assert checked >= 5


def display_rect_by_pdfium(page, line, frame):
    """The displayed rectangle of a text line, through pdfium: its user-space rect found among
    pdfium's text rects by text, mapped with FPDF_PageToDevice."""
    textpage = page.get_textpage()
    try:
        for i in range(textpage.count_rects()):
            rect = textpage.get_rect(i)
            box = display_rect(rect, page.get_cropbox(), page.get_rotation())
            if abs(box[0] - line.x0) < 0.5 and abs(box[1] - line.y0) < 0.5:
                corners = [_device(page, x, y, frame.width, frame.height)
                           for x in rect[0::2] for y in rect[1::2]]  # fmt: skip
                xs, ys = [c[0] for c in corners], [c[1] for c in corners]
                return min(xs), min(ys), max(xs), max(ys)
    finally:
        textpage.close()
    raise AssertionError(f"no pdfium rect for {line}")


def test_text_lines_are_in_display_points_and_hold_the_pages_text(corpus, tmp_path):
    path = _variant(corpus, tmp_path, 90, None)
    doc = open_pdf(path.read_bytes())
    lines = text_lines(doc[0])
    width, height = doc[0].get_size()
    assert (width, height) == (792.0, 612.0)
    assert lines and all(0 <= ln.x0 < ln.x1 <= width and 0 <= ln.y0 < ln.y1 <= height
                         for ln in lines)  # fmt: skip
    assert any("Trace-based Just-in-Time" in ln.text for ln in lines)


def test_image_pages_record_pixels_of_the_original_image():
    from vlbeam.transforms.media.pdf_render import render_image

    buf = io.BytesIO()
    Image.new("RGB", (3000, 1000), "white").save(buf, format="JPEG")
    page = render_image(buf.getvalue(), RenderConfig(target_long_side=600))
    assert (page.width_px, page.height_px) == (600, 200)
    assert (page.page_width, page.page_height, page.page_unit) == (3000, 1000, "px")
    box = grid_to_page((500, 500, 1000, 1000), PageFrame(page.page_width, page.page_height, "px"))
    assert box == {"x0": 1500.0, "y0": 500.0, "x1": 3000.0, "y1": 1000.0}
