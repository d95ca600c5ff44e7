# ruff: noqa: E402  (the test dependency check runs before the imports that need it)
"""Documents as data end to end through `vlbeam run`: a local server answers QwenVL HTML for
each page (it reads which page it was sent from a grey marker on the page), and the run writes
blocks with boxes in PDF points, a table split over two pages as one row, figures cropped from
the rendered page, and the document text without its running header; the default Markdown run
writes blocks and document_text too; pages from the text layer get blocks from pdfium's boxes,
and running heads of a real book are taken out of its document text."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.conftest import require_module

require_module("aiohttp", "openai")

from tests.fake_api_server import Answer, FakeApiServer
from tests.pipeline_helpers import read_table, run_job

PAGE_SIZE = (600, 800)  # PIL writes PDFs at 72 dpi: 1 px = 1 pt


def marked_pdf(path: Path, n_pages: int) -> Path:
    """Pages whose top-left 40x40 square is grey level 40*n (page n), with a black figure box
    where the answers put it (grid 100..500 x 400..600 → 60..300 x 320..480 pt)."""
    pages = []
    for n in range(1, n_pages + 1):
        page = Image.new("RGB", PAGE_SIZE, "white")
        draw = ImageDraw.Draw(page)
        draw.rectangle((0, 0, 39, 39), fill=(40 * n,) * 3)
        draw.rectangle((60, 320, 299, 479), fill=(200, 30, 30))
        draw.text((100, 100), f"Body of page {n}", fill="black")
        pages.append(page)
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=72)
    return path


def page_of(image: bytes) -> int:
    grey = Image.open(io.BytesIO(image)).convert("L").getpixel((5, 5))
    return round(grey / 40)


HEADER = '<div class="header" data-bbox="0 0 1000 30">ACME Quarterly Report</div>'
ANSWERS = {
    1: HEADER
    + '<h1 data-bbox="100 60 900 100">Results</h1>'
    + '<p data-bbox="100 110 900 200">Sales rose in every region.</p>'
    + '<div class="table" data-bbox="100 700 900 950"><table><thead><tr><th>Region</th>'
    "<th>Units</th></tr></thead><tbody><tr><td>North</td><td>10</td></tr>"
    "<tr><td>South</td><td>20</td></tr></tbody></table></div>"
    + '<div class="page_number" data-bbox="480 970 520 990">1</div>',
    2: "```html\n<html><body>"
    + HEADER
    + '<div class="table" data-bbox="100 40 900 200"><table><tr><td>East</td><td>30</td></tr>'
    "<tr><td>West</td><td>40</td></tr></table></div>"
    + '<div class="image" data-bbox="100 400 500 600"></div>'
    + '<p data-bbox="100 610 500 640">Figure 1: Units by region</p>'
    + "<p>Closing remarks"  # unclosed, no box
    + '<div class="page_number" data-bbox="480 970 520 990">2</div></body></html>\n```',
    3: HEADER + '<p data-bbox="100 60 900 100">Appendix text.</p>',
}


def html_server_answer(request) -> Answer:
    return Answer(text=ANSWERS[page_of(request.images[0])])


def api_args(server, *extra: str) -> list[str]:
    return ["--backend=openai", "--provider=openai", "--api-model=m", "--no-preflight",
            f"--base-url={server.base_url}", "--api-key-env=", "--target-long-side=800",
            "--tasks=ocr", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def html_run(tmp_path_factory):
    src = tmp_path_factory.mktemp("in")
    marked_pdf(src / "report.pdf", 3)
    out = tmp_path_factory.mktemp("out") / "out"
    with FakeApiServer(html_server_answer) as server:
        run_job([str(src / "report.pdf")], out,
                *api_args(server, "--ocr-format=html", "--figures=crop"))  # fmt: skip
        prompts = {t for r in server.model_requests() for t in r.texts}
    return out, prompts


def test_html_run_asks_the_cookbook_prompt_and_writes_markdown_pages(html_run):
    out, prompts = html_run
    assert prompts == {"qwenvl html"}
    pages = {r["page_number"]: r for r in read_table(out, "pages")}
    assert pages[1]["prompt_id"] == "ocr_html_v1"
    assert pages[1]["text"].startswith("ACME Quarterly Report\n\n# Results\n\nSales rose")
    assert "| Region | Units |" in pages[1]["text"] and "<div" not in pages[1]["text"]
    assert "```" not in pages[2]["text"] and "Closing remarks" in pages[2]["text"]


def test_blocks_have_categories_and_boxes_in_pdf_points(html_run):
    out, _ = html_run
    blocks = sorted(read_table(out, "blocks"), key=lambda r: (r["page_number"], r["block_index"]))
    page1 = [(b["category"], b["bbox"], b["bbox_unit"]) for b in blocks if b["page_number"] == 1]
    assert page1 == [
        ("header", {"x0": 0.0, "y0": 0.0, "x1": 600.0, "y1": 24.0}, "pt"),
        ("title", {"x0": 60.0, "y0": 48.0, "x1": 540.0, "y1": 80.0}, "pt"),
        ("paragraph", {"x0": 60.0, "y0": 88.0, "x1": 540.0, "y1": 160.0}, "pt"),
        ("table", {"x0": 60.0, "y0": 560.0, "x1": 540.0, "y1": 760.0}, "pt"),
        ("page_number", {"x0": 288.0, "y0": 776.0, "x1": 312.0, "y1": 792.0}, "pt"),
    ]
    loose = [b for b in blocks if b["text"] == "Closing remarks"]
    assert len(loose) == 1 and loose[0]["bbox"] is None and loose[0]["bbox_unit"] is None
    table = next(b for b in blocks if b["category"] == "table")
    assert table["html"].startswith("<table>") and table["text_source"] == "model"


def test_a_table_split_over_two_pages_is_one_row(html_run):
    out, _ = html_run
    [table] = read_table(out, "tables")
    assert table["page_numbers"] == [1, 2]
    assert table["header"] == ["Region", "Units"]
    assert table["rows"] == [["North", "10"], ["South", "20"], ["East", "30"], ["West", "40"]]
    assert (table["n_rows"], table["n_cols"], table["table_index"]) == (4, 2, 0)
    assert table["bbox"] == {"x0": 60.0, "y0": 560.0, "x1": 540.0, "y1": 760.0}


def test_figures_are_cropped_from_the_rendered_page_with_their_caption(html_run):
    import hashlib

    out, _ = html_run
    [figure] = read_table(out, "figures")
    assert (figure["page_number"], figure["figure_index"]) == (2, 0)
    assert figure["caption"] == "Figure 1: Units by region"
    assert figure["bbox"] == {"x0": 60.0, "y0": 320.0, "x1": 300.0, "y1": 480.0}
    crop = Image.open(io.BytesIO(figure["image"])).convert("RGB")
    assert crop.size == (figure["width_px"], figure["height_px"]) == (240, 160)
    red = crop.getpixel((120, 80))  # the red box drawn there (PIL's PDF holds a JPEG)
    assert abs(red[0] - 200) < 8 and red[1] < 40 and red[2] < 40
    corner = crop.getpixel((2, 2))
    assert abs(corner[0] - 200) < 8 and corner[1] < 40  # the crop starts on the box
    assert figure["sha256"] == hashlib.sha256(figure["image"]).hexdigest()


def test_document_text_has_each_page_once_in_order_without_the_running_header(html_run):
    out, _ = html_run
    [doc] = read_table(out, "document_text")
    text = doc["text"]
    assert "ACME Quarterly Report" not in text
    assert doc["removed"] == ["ACME Quarterly Report", "1", "2"]
    assert doc["status"] == "complete" and doc["missing_pages"] == []
    assert [s["page_number"] for s in doc["page_spans"]] == [1, 2, 3]
    spans = [text[s["start"] : s["end"]] for s in doc["page_spans"]]
    assert spans[0].startswith("# Results") and "| South | 20 |" in spans[0]
    assert spans[1].startswith("| East | 30 |") and spans[1].endswith("Closing remarks")
    assert spans[2] == "Appendix text."
    assert (
        text.index("<!-- page 1 -->")
        < text.index("<!-- page 2 -->")
        < text.index("<!-- page 3 -->")
    )


def test_default_markdown_run_writes_blocks_and_document_text(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    marked_pdf(src / "doc.pdf", 2)
    out = tmp_path / "out"

    def markdown(request) -> Answer:
        n = page_of(request.images[0])
        return Answer(
            text=f"# Page {n}\n\nSome text on page {n}.\n\n| a | b |\n|---|---|\n| {n} | x |"
        )

    with FakeApiServer(markdown) as server:
        run_job([str(src / "doc.pdf")], out, *api_args(server))
        assert {t for r in server.model_requests() for t in r.texts} == {"qwenvl markdown"}
    pages = {r["page_number"]: r["text"] for r in read_table(out, "pages")}
    assert pages[1].startswith("# Page 1\n\nSome text")  # unchanged meaning
    blocks = read_table(out, "blocks")
    assert sorted((b["page_number"], b["category"]) for b in blocks) == [
        (1, "paragraph"), (1, "table"), (1, "title"), (2, "paragraph"), (2, "table"), (2, "title")
    ]  # fmt: skip
    assert all(b["bbox"] is None for b in blocks)
    [doc] = read_table(out, "document_text")
    assert [doc["text"][s["start"] : s["end"]] for s in doc["page_spans"]] == [pages[1], pages[2]]
    tables = read_table(out, "tables")  # a table ends page 1 but page 2 starts with a heading
    assert sorted(t["page_numbers"] for t in tables) == [[1], [2]]
    assert read_table(out, "figures") == []


def test_text_layer_pages_get_blocks_and_lose_the_books_running_heads(tmp_path, corpus):
    """pdf.js's freeculture.pdf (a book: running heads "INTRODUCTION 5" / "6 FREE CULTURE" and
    a URL line at the foot of every page), pages from its text layer, no model call."""
    import pypdfium2 as pdfium

    src = tmp_path / "in"
    src.mkdir()
    book = pdfium.PdfDocument(str(corpus / "pdf/good/pdfjs_freeculture.pdf"))
    part = pdfium.PdfDocument.new()
    part.import_pages(book, list(range(20, 30)))  # book pages 21-30: the introduction
    with open(src / "book.pdf", "wb") as fh:
        part.save(fh)
    out = tmp_path / "out"
    with FakeApiServer() as server:
        extra = ("--text-layer-policy=prefer", "--target-long-side=400")
        run_job([str(src / "book.pdf")], out, *api_args(server, *extra))
        sent = len(server.model_requests())
    pages = {r["page_number"]: r for r in read_table(out, "pages")}
    from_layer = {n for n, r in pages.items() if r["text_source"] == "text_layer"}
    assert len(from_layer) >= 9 and sent == 10 - len(from_layer)  # a sparse page goes to OCR
    blocks = read_table(out, "blocks")
    assert {b["page_number"] for b in blocks} == set(range(1, 11))  # every page has blocks
    for b in blocks:
        if b["page_number"] in from_layer:
            assert b["text_source"] == "text_layer" and b["bbox_unit"] == "pt"
            assert 0 <= b["bbox"]["x0"] < b["bbox"]["x1"] <= 612
            assert 0 <= b["bbox"]["y0"] < b["bbox"]["y1"] <= 792
    [doc] = read_table(out, "document_text")
    text = doc["text"]
    assert 2 in from_layer and "FREE CULTURE" in pages[2]["text"]  # the page keeps it ...
    assert "FREE CULTURE" not in text and "INTRODUCTION 5" not in text  # ... the document not
    assert "free-culture.org/get-it" not in text
    assert any(r.startswith("INTRODUCTION") for r in doc["removed"])
    assert "RCA\u2019s president, David Sarnoff" in text  # the body stays
    assert doc["status"] == "complete" and len(doc["page_spans"]) == 10


def test_the_readme_query_finds_the_table_by_its_header(html_run):
    import re

    import duckdb

    out, _ = html_run
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    query = re.search(r"```sql\n(SELECT doc_id, source_uri, page_numbers.*?)```", readme, re.S)
    sql = query.group(1).replace("'out/tables", f"'{out}/tables")
    with duckdb.connect() as con:
        found = con.execute(sql).fetchall()
    assert [(r[2], r[3], r[4]) for r in found] == [([1, 2], 0, 4)]
