# ruff: noqa: E402  (the test dependency check runs before the imports that need it)
"""`--model-preset chandra` end to end: a local server answering Chandra's layout HTML; the
page's text is the Markdown, its blocks land in the `blocks` table with mapped categories and
boxes brought from Chandra's grid onto the page, furniture out of the text."""

from __future__ import annotations

from PIL import Image, ImageDraw

from tests.conftest import require_module

require_module("aiohttp", "openai")

from tests.fake_api_server import Answer, FakeApiServer, Recorded
from tests.pipeline_helpers import read_table, run_job

CHANDRA = (
    '<div data-bbox="0 0 1000 100" data-label="Page-Header"><p>Header</p></div>'
    '<div data-bbox="100 200 900 300" data-label="Section-Header"><h2>Results</h2></div>'
    '<div data-bbox="100 300 900 500" data-label="Text"><p>Revenue grew.</p></div>'
    '<div data-bbox="100 500 900 700" data-label="Table"><table><tr><td>a</td></tr></table></div>'
)


def answer(rec: Recorded) -> Answer:
    return Answer(text="OK" if rec.is_preflight else CHANDRA)


def test_chandra_answers_fill_pages_and_blocks(tmp_path):
    page = Image.new("RGB", (612, 792), "white")
    ImageDraw.Draw(page).rectangle((60, 200, 500, 230), fill=(0, 0, 0))
    pdf = tmp_path / "doc.pdf"
    page.save(pdf, "PDF", resolution=72)
    out = tmp_path / "out"
    with FakeApiServer(answer) as server:
        run_job([str(pdf)], out, "--model-preset=chandra", "--backend=openai",
                "--provider=openai", f"--base-url={server.base_url}", "--api-model=chandra",
                "--api-key-env=", "--run-id=ch1")  # fmt: skip
        [request] = server.model_requests()
    assert [p["type"] for p in request.body["messages"][0]["content"]] == ["image_url", "text"]
    assert request.body["top_p"] == 0.1 and request.body["max_tokens"] == 12384
    assert read_table(out, "failures") == []
    [row] = read_table(out, "pages")
    assert row["text"] == "## Results\n\nRevenue grew.\n\n<table><tr><td>a</td></tr></table>"
    assert row["quality_flags"] == [] and row["prompt_id"] == "chandra2_ocr_layout_v1"
    blocks = sorted(read_table(out, "blocks"), key=lambda b: b["block_index"])
    assert [b["category"] for b in blocks] == ["header", "heading", "paragraph", "table"]
    body = blocks[2]["bbox"]  # 100..900 x 300..500 of 1000 on a 612 x 792 pt page
    assert blocks[2]["bbox_unit"] == "pt"
    assert (round(body["x0"], 1), round(body["y0"], 1), round(body["x1"], 1)) == (
        61.2,
        237.6,
        550.8,
    )
