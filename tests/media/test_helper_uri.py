"""The helper process reads a document itself from its URI (file-backed, part by part), with
the same results as from its bytes; the worker never holds the file."""

from __future__ import annotations

from pathlib import Path

from vlbeam.schemas.config import RenderConfig
from vlbeam.transforms.media.helper_process import HelperProcess

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
DOC = "a" * 64


def test_a_document_read_from_its_uri_renders_as_from_its_bytes(corpus, tmp_path):
    pdf = corpus / "pdf/good/pdfjs_tracemonkey.pdf"
    cfg = RenderConfig(target_long_side=300, renderer="pypdfium2")
    by_bytes, by_uri = HelperProcess(), HelperProcess()
    try:
        data = pdf.read_bytes()
        assert by_uri.count_pages(DOC, str(pdf), None) == by_bytes.count_pages(DOC, data, None)
        for page in (1, 7, 14):
            a = by_bytes.render(DOC, data, "pdf", page, cfg)
            b = by_uri.render(DOC, str(pdf), "pdf", page, cfg)
            assert (a.image, a.text_layer, a.width_px) == (b.image, b.text_layer, b.width_px)
        poppler = RenderConfig(target_long_side=300, renderer="pdf2image")
        assert by_uri.render(DOC, str(pdf), "pdf", 2, poppler).width_px == 232
        empty = tmp_path / "empty.pdf"
        empty.write_bytes(b"")
        try:
            by_uri.count_pages("b" * 64, str(empty), None)
        except Exception as exc:
            assert "file is empty" in str(exc)
        else:
            raise AssertionError("an empty file must fail")
        image = by_uri.render("c" * 64, str(SAMPLES / "born_digital.pdf"), "pdf", 1, cfg)
        assert image.text_layer and image.width_px <= 300
    finally:
        by_bytes.close()
        by_uri.close()
