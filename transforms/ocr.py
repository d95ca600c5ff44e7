"""OCR: rendered pages → model requests, and model results → `pages` rows."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.config import LayoutConfig, PagePolicy, Prompt
from vlbeam.schemas.elements import PageImage, PageRef, Provenance, VLRequest, VLResult
from vlbeam.schemas.meta import meta_column
from vlbeam.transforms.answers.degenerate import quality_flags
from vlbeam.transforms.dead_letter import NAMESPACE
from vlbeam.transforms.layout import (
    BLOCKS_TAG,
    LAYOUT_TAG,
    block_rows,
    page_layout_keyed,
    read_page,
)
from vlbeam.transforms.media.text_layer import TEXT_SOURCE_MODEL, text_layer_agreement
from vlbeam.transforms.model_call import count_usage, model_call_columns
from vlbeam.transforms.progress import ProgressLog

logger = logging.getLogger(__name__)

DEFAULT_POLICY = PagePolicy()
DEFAULT_LAYOUT = LayoutConfig()


def page_request(page: PageImage, prompt: Prompt) -> tuple[PageRef, VLRequest]:
    return page.ref, VLRequest(images=(page.image,), prompt=prompt.text)


def page_quality_columns(ref: PageRef, result: VLResult, policy: PagePolicy) -> dict:
    """text_source, quality_flags, text_layer_agreement and retries of one page's row."""
    from_model = result.text_source == TEXT_SOURCE_MODEL
    compare = (
        from_model
        and policy.text_layer_policy == "compare"
        and bool(ref.text_layer and not ref.text_layer.isspace())
    )
    return {
        "text_source": result.text_source,
        "quality_flags": quality_flags(result.text, result.finish_reason, ref.blank)
        if from_model
        else [],
        "text_layer_agreement": text_layer_agreement(result.text or "", ref.text_layer)
        if compare
        else None,
        "retries": result.retries,
    }


def page_row(
    ref: PageRef, result: VLResult, prov: Provenance, policy: PagePolicy = DEFAULT_POLICY
) -> dict:
    return {
        "doc_id": ref.doc_id,
        "source_uri": ref.source_uri,
        "page_number": ref.page_number,
        "width_px": ref.width_px,
        "height_px": ref.height_px,
        "text": result.text,
        "text_layer": ref.text_layer,
        **page_quality_columns(ref, result, policy),
        "model": prov.model,
        "backend": prov.backend,
        "prompt_id": prov.prompt_id,
        **model_call_columns(result, prov),
        "run_id": prov.run_id,
        "meta": meta_column(ref.meta),
    }


class ToPageRows(beam.DoFn):
    """(PageRef, VLResult) → a `pages` row (main output), its `blocks` rows (tag `blocks`) and
    its ((source_uri, meta), PageLayout) for document assembly (tag `layout`), counting tokens
    in Beam metrics. Under `--ocr-format html` the row's `text` is the answer converted to
    Markdown."""

    def __init__(
        self,
        prov: Provenance,
        policy: PagePolicy = DEFAULT_POLICY,
        layout: LayoutConfig = DEFAULT_LAYOUT,
    ) -> None:
        self._prov = prov
        self._policy = policy
        self._layout = layout
        self._ok = Metrics.counter(NAMESPACE, "pages_ok")
        self._truncated = Metrics.counter(NAMESPACE, "pages_truncated")
        self._progress: ProgressLog | None = None

    def setup(self) -> None:
        self._progress = ProgressLog("OCR pages")

    def process(self, keyed):
        ref, result = keyed
        self._ok.inc()
        count_usage(result, page=True)
        if result.finish_reason == "length":
            self._truncated.inc()
        self._progress.tick()
        row = page_row(ref, result, self._prov, self._policy)
        for flag in row["quality_flags"]:
            Metrics.counter(NAMESPACE, f"pages_flagged.{flag}").inc()
        parsed = read_page(ref, result, self._layout)
        if self._layout.ocr_format == "html" and result.text_source == TEXT_SOURCE_MODEL:
            row["text"] = parsed.markdown
        if parsed.bad_boxes:
            Metrics.counter(NAMESPACE, "blocks_bad_boxes").inc(parsed.bad_boxes)
        yield row
        for block in block_rows(ref, parsed, result.text_source, self._prov):
            yield beam.pvalue.TaggedOutput(BLOCKS_TAG, block)
        yield beam.pvalue.TaggedOutput(LAYOUT_TAG, page_layout_keyed(ref, parsed))
