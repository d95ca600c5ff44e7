"""Cost of documents-as-data per page against the cost of rendering the page.

For real born-digital pages (pdf.js tracemonkey + py-pdf multicolumn, 17 pages) it times:
- rendering: `render_pdf_page` at vlbeam's defaults (1288 px long side, PNG level 1, text
  layer on), one process, the PDF open;
- parsing and assembly: a QwenVL HTML answer per page, written from the page's own text lines
  (one `<p data-bbox>` per paragraph, a 6x4 table on every third page, a running header and a
  page number: the size of a real answer), parsed into blocks (`parse_qwenvl_html`), turned into
  `blocks` rows and the page's layout record (`transforms/layout.py`), then 1,000 such pages
  assembled into one document's `document_text` and `tables` (`document_rows`).

Prints the per-1,000-page costs and their ratio (goal: < 0.05) and writes JSON.

    ./py bench/bench_layout.py [--corpus DIR] [--rounds N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from vlbeam.schemas.config import LayoutConfig, RenderConfig
from vlbeam.schemas.elements import PageRef, Provenance, VLResult
from vlbeam.transforms.answers.blocks import GRID, PageFrame
from vlbeam.transforms.answers.text_layer_blocks import text_layer_blocks
from vlbeam.transforms.layout import block_rows, document_rows, page_layout, read_page
from vlbeam.transforms.media.pdf_render import open_pdf, render_pdf_page

PDFS = ("pdfjs_tracemonkey.pdf", "samplefiles_multicolumn.pdf")
PROV = Provenance("m", "openai", "ocr_html_v1", "bench")


def answer_for(page, n: int) -> str:
    """A QwenVL HTML answer as the model would give for this page."""
    frame = PageFrame(page.page_width, page.page_height, "pt")
    parts = ['<html><body><div class="header" data-bbox="80 20 920 40">Running head</div>']
    for block in text_layer_blocks(page.text_lines, frame):
        x0, y0, x1, y1 = (round(v) for v in block.box or (0, 0, GRID, GRID))
        parts.append(f'<p data-bbox="{x0} {y0} {x1} {y1}">{block.text}</p>')
    if n % 3 == 0:
        cells = "".join(
            "<tr>" + "".join(f"<td>r{r}c{c} 12.{r}{c}</td>" for c in range(4)) + "</tr>"
            for r in range(6)
        )
        parts.append(f'<div class="table" data-bbox="100 700 900 900"><table>{cells}</table></div>')
    parts.append(f'<div class="page_number" data-bbox="480 960 520 980">{n}</div></body></html>')
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    default_corpus = Path(__file__).resolve().parents[2] / "shared" / "corpus"
    parser.add_argument("--corpus", default=os.environ.get("VLBEAM_CORPUS") or default_corpus)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/results/bench_layout.json")
    args = parser.parse_args()

    def render_all(cfg: RenderConfig) -> list:
        rendered = []
        for name in PDFS:
            doc = open_pdf((Path(args.corpus) / "pdf" / "good" / name).read_bytes())
            for i in range(len(doc)):
                rendered.append(render_pdf_page(doc, i + 1, cfg))
            doc.close()
        return rendered

    render_s = []
    for _ in range(args.rounds):  # the default render (no per-line text boxes)
        t0 = time.perf_counter()
        n_rendered = len(render_all(RenderConfig()))
        render_s.append((time.perf_counter() - t0) / n_rendered)
    render_per_page = statistics.median(render_s)
    pages = render_all(RenderConfig(text_boxes=True))  # the lines to write answers from

    answers = [answer_for(p, n) for n, p in enumerate(pages, 1)]
    n_pages = 1000
    layout = LayoutConfig(ocr_format="html")
    parse_s = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        records = []
        for n in range(1, n_pages + 1):
            page = pages[n % len(pages)]
            ref = PageRef("0" * 64, "file:///bench.pdf", n, page.width_px, page.height_px,
                          page_width=page.page_width, page_height=page.page_height,
                          page_unit="pt")  # fmt: skip
            result = VLResult(text=answers[n % len(answers)])
            parsed = read_page(ref, result, layout)
            block_rows(ref, parsed, "model", PROV)
            records.append(page_layout(ref, parsed))
        grouped = {"pages": records, "facts": [], "failed": []}
        out = list(document_rows("file:///bench.pdf", grouped, PROV))
        parse_s.append(time.perf_counter() - t0)
    parse_per_1000 = statistics.median(parse_s) * 1000 / n_pages
    render_per_1000 = render_per_page * 1000
    ratio = parse_per_1000 / render_per_1000
    answer_kb = statistics.mean(len(a.encode()) for a in answers) / 1024
    print(
        f"pages rendered: {len(pages)} (median of {args.rounds} rounds), answer {answer_kb:.1f} KB"
    )
    print(f"rendering          {render_per_1000:8.1f} s per 1,000 pages")
    chars = len(out[0]["text"]) / 1e6
    print(f"parse + assembly   {parse_per_1000:8.1f} s per 1,000 pages "
          f"({len(out) - 1} tables, {chars:.1f} M chars of document text)")  # fmt: skip
    print(f"ratio              {ratio:8.3f}  (goal < 0.05)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "render_s_per_1000": render_per_1000, "parse_assembly_s_per_1000": parse_per_1000,
        "ratio": ratio, "render_rounds_s_per_page": render_s, "parse_rounds_s": parse_s,
        "pages": len(pages), "answer_kb": answer_kb, "load_avg": os.getloadavg(),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
