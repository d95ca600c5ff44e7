"""Pages as data: each page's answer read into layout blocks (`blocks` rows), and each
document's pages assembled into its `document_text` row and its `tables` rows.

Per page (`read_page`, in the stage that makes `pages` rows): a QwenVL HTML answer
(`--ocr-format html`) or a Markdown one is parsed into blocks; a page answered from the text
layer gets paragraph blocks from its lines' pdfium boxes; boxes go from the model's grid to the
page's own units (`blocks.grid_to_page`). What the document stage needs of a page is a small
`PageLayout` record (its blocks' categories and text, and its tables' HTML): never pixels.

Per document (`AssembleDocuments`): the page records, the document's page count and its failed
pages are grouped by input (source URI, carried keys: one file listed with two sets of keys is
two documents) after inference (CoGroupByKey), then `document_text.assemble` and
`tables.merge_tables` run on them. A worker holds one document's page records at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.config import LayoutConfig
from vlbeam.schemas.elements import Failure, PageRef, Provenance, VLResult
from vlbeam.schemas.meta import Meta, meta_column
from vlbeam.transforms.answers.blocks import FURNITURE, Block, PageFrame, ParsedPage, grid_to_page
from vlbeam.transforms.answers.document_text import PageText, assemble
from vlbeam.transforms.answers.markdown_blocks import parse_markdown
from vlbeam.transforms.answers.qwenvl_html import parse_qwenvl_html
from vlbeam.transforms.answers.tables import TablePart, first_table, merge_tables, table_grid
from vlbeam.transforms.answers.text_layer_blocks import text_layer_blocks
from vlbeam.transforms.dead_letter import NAMESPACE
from vlbeam.transforms.media.text_layer import TEXT_SOURCE_BLANK, TEXT_SOURCE_TEXT_LAYER

logger = logging.getLogger(__name__)

BLOCKS_TAG = "blocks"
LAYOUT_TAG = "layout"


def page_frame(ref: PageRef) -> PageFrame | None:
    if ref.page_width and ref.page_height and ref.page_unit:
        return PageFrame(ref.page_width, ref.page_height, ref.page_unit)
    return None


def read_page(ref: PageRef, result: VLResult, layout: LayoutConfig) -> ParsedPage:
    """A page's blocks (boxes on the model's grid) and its Markdown."""
    text = result.text or ""
    if result.text_source == TEXT_SOURCE_BLANK:
        return ParsedPage((), text)
    if result.text_source == TEXT_SOURCE_TEXT_LAYER:
        frame = page_frame(ref)
        if ref.text_lines and frame is not None:
            return ParsedPage(tuple(text_layer_blocks(ref.text_lines, frame)), text)
        return parse_markdown(text)
    if layout.ocr_format == "html":
        return parse_qwenvl_html(text)
    return parse_markdown(text)


def block_bbox(block: Block, frame: PageFrame | None) -> tuple[dict | None, str | None]:
    if block.box is None or frame is None:
        return None, None
    return grid_to_page(block.box, frame), frame.unit


def block_rows(ref: PageRef, parsed: ParsedPage, text_source: str, prov: Provenance) -> list[dict]:
    frame = page_frame(ref)
    rows = []
    for index, block in enumerate(parsed.blocks):
        bbox, unit = block_bbox(block, frame)
        rows.append(
            {
                "doc_id": ref.doc_id,
                "source_uri": ref.source_uri,
                "page_number": ref.page_number,
                "block_index": index,
                "category": block.category,
                "bbox": bbox,
                "bbox_unit": unit,
                "text": block.text,
                "html": block.html,
                "text_source": text_source,
                "model": prov.model,
                "backend": prov.backend,
                "prompt_id": prov.prompt_id,
                "run_id": prov.run_id,
                "meta": meta_column(ref.meta),
            }
        )
    return rows


@dataclass(frozen=True)
class PageLayout:
    """What assembling a document needs of one page (small text; keyed by its input:
    (source URI, carried keys))."""

    doc_id: str
    page_number: int
    blocks: tuple[tuple[str, str], ...]  # (category, Markdown)
    tables: tuple[tuple[str, dict | None, bool, bool], ...]  # (html, bbox, first, last)
    bbox_unit: str | None


def page_layout(ref: PageRef, parsed: ParsedPage) -> PageLayout:
    frame = page_frame(ref)
    content = [i for i, b in enumerate(parsed.blocks) if b.category not in FURNITURE]
    tables = []
    for i, block in enumerate(parsed.blocks):
        if block.category == "table" and block.html:
            bbox, _ = block_bbox(block, frame)
            tables.append((block.html, bbox, i == content[0], i == content[-1]))
    return PageLayout(
        doc_id=ref.doc_id,
        page_number=ref.page_number,
        blocks=tuple((b.category, b.text) for b in parsed.blocks),
        tables=tuple(tables),
        bbox_unit=frame.unit if frame else None,
    )


# ------------------------------------------------------------------------------ per document

_GAP_STAGES = frozenset({"render", "inference", "parse"})


def page_layout_keyed(ref: PageRef, parsed: ParsedPage) -> tuple[tuple[str, Meta], PageLayout]:
    """A page's `PageLayout`, keyed by its input (source URI, carried keys): one file listed
    with two sets of keys is two documents, assembled apart."""
    return (ref.source_uri, ref.meta), page_layout(ref, parsed)


def failed_page(failure: Failure):
    """((source_uri, meta), page_number) of a failure that cost a page, for
    `missing_pages`."""
    if failure.unit is not None and failure.stage in _GAP_STAGES:
        yield failure.key, failure.unit


def document_rows(key: str | tuple[str, Meta], grouped: dict, prov: Provenance):
    """The `document_text` row (main output) and `tables` rows (tagged) of one document.
    `key`: its input, (source URI, carried keys) (a bare URI: no keys)."""
    uri, meta = (key, None) if isinstance(key, str) else key
    pages: list[PageLayout] = sorted(grouped["pages"], key=lambda p: p.page_number)
    if not pages:
        return
    num_pages = max((f.num_pages for f in grouped["facts"] if f.num_pages), default=None)
    assembled = assemble(
        (PageText(p.page_number, p.blocks) for p in pages), num_pages, grouped["failed"]
    )
    doc_id = pages[0].doc_id
    yield {
        "doc_id": doc_id,
        "source_uri": uri,
        **assembled,
        "model": prov.model,
        "prompt_id": prov.prompt_id,
        "run_id": prov.run_id,
        "meta": meta_column(meta),
    }
    parts = []
    unit = next((p.bbox_unit for p in pages if p.bbox_unit), None)
    for page in pages:
        for html, bbox, first, last in page.tables:
            table = first_table(html)
            if table is None:
                continue
            grid = table_grid(table)
            if grid.n_cols == 0:
                continue
            parts.append(TablePart(page.page_number, html, grid, bbox, first, last))
    for table in merge_tables(parts):
        yield beam.pvalue.TaggedOutput(
            "tables",
            {
                "doc_id": doc_id,
                "source_uri": uri,
                **table.to_row(),
                "bbox_unit": unit if table.bbox is not None else None,
                "model": prov.model,
                "prompt_id": prov.prompt_id,
                "run_id": prov.run_id,
                "meta": meta_column(meta),
            },
        )


class _DocumentRows(beam.DoFn):
    def __init__(self, prov: Provenance) -> None:
        self._prov = prov
        self._docs = Metrics.counter(NAMESPACE, "documents_assembled")

    def process(self, keyed):
        key, grouped = keyed
        for out in document_rows(key, grouped, self._prov):
            if not isinstance(out, beam.pvalue.TaggedOutput):
                self._docs.inc()
            yield out


class AssembleDocuments(beam.PTransform):
    """((source_uri, meta), PageLayout), DocumentFacts and failures → `document_text` rows
    (main) and `tables` rows, grouped by input (source URI, carried keys)."""

    def __init__(self, prov: Provenance) -> None:
        super().__init__()
        self._prov = prov

    def expand(self, inputs):
        layouts, facts, failures = inputs
        keyed_facts = facts | "FactsByInput" >> beam.Map(lambda f: (f.key, f))
        failed = failures | "FailedPages" >> beam.FlatMap(failed_page)
        grouped = {
            "pages": layouts,
            "facts": keyed_facts,
            "failed": failed,
        } | "GroupByDocument" >> beam.CoGroupByKey()
        out = grouped | "DocumentRows" >> beam.ParDo(_DocumentRows(self._prov)).with_outputs(
            "tables", main="document_text"
        )
        return {"document_text": out.document_text, "tables": out.tables}
