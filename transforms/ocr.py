"""OCR: rendered pages → model requests, and model results → `pages` rows."""

from __future__ import annotations

import dataclasses
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.config import LayoutConfig, PagePolicy, Prompt
from vlbeam.schemas.elements import PageImage, PageRef, Provenance, VLRequest, VLResult
from vlbeam.schemas.meta import meta_column
from vlbeam.transforms.answers.blocks import ParsedPage
from vlbeam.transforms.answers.degenerate import quality_flags
from vlbeam.transforms.answers.markdown_blocks import parse_markdown
from vlbeam.transforms.answers.preset_answers import FLAG_UNPARSED, ParsedAnswer, parse_answer
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
    return page.ref, VLRequest(
        images=(page.image,), prompt=prompt.text, prompt_first=prompt.prompt_first
    )


def read_answer(result: VLResult, policy: PagePolicy) -> ParsedAnswer:
    """The model's answer read in its format (--model-preset); a page with no model call
    (blank, text layer) is taken as it is."""
    if result.text_source != TEXT_SOURCE_MODEL:
        return ParsedAnswer(result.text)
    parsed = parse_answer(policy.answer_format, result.text, policy.bbox_grid)
    if parsed.page_meta is not None:
        parsed = dataclasses.replace(
            parsed, page_meta={**parsed.page_meta, "rotation": result.rotation}
        )
    return parsed


def preset_page(text: str | None, answer: ParsedAnswer) -> ParsedPage:
    """A --model-preset answer as the `blocks` table's page: the parser's own blocks (Chandra,
    Nanonets), else the blocks of its markdown text (olmOCR's text after the front matter, or
    an unparsed answer's raw text); the page's Markdown is `text` (the row's)."""
    if answer.ok and answer.blocks:
        return ParsedPage(tuple(answer.blocks), text or "")
    return parse_markdown(text)


def page_quality_columns(
    ref: PageRef, result: VLResult, policy: PagePolicy, parsed: ParsedAnswer | None = None
) -> dict:
    """text_source, quality_flags, text_layer_agreement and retries of one page's row
    (`parsed`: the answer as read, whose text is the page's)."""
    from_model = result.text_source == TEXT_SOURCE_MODEL
    text = result.text if parsed is None else parsed.text
    compare = (
        from_model
        and policy.text_layer_policy == "compare"
        and bool(ref.text_layer and not ref.text_layer.isspace())
    )
    flags = quality_flags(text, result.finish_reason, ref.blank) if from_model else []
    if parsed is not None and not parsed.ok:
        flags.append(FLAG_UNPARSED)
    return {
        "text_source": result.text_source,
        "quality_flags": flags,
        "text_layer_agreement": text_layer_agreement(text or "", ref.text_layer)
        if compare
        else None,
        "retries": result.retries,
    }


def page_row(
    ref: PageRef, result: VLResult, prov: Provenance, policy: PagePolicy = DEFAULT_POLICY
) -> dict:
    parsed = read_answer(result, policy)
    return {
        "doc_id": ref.doc_id,
        "source_uri": ref.source_uri,
        "page_number": ref.page_number,
        "width_px": ref.width_px,
        "height_px": ref.height_px,
        "text": parsed.text,
        "text_layer": ref.text_layer,
        **page_quality_columns(ref, result, policy, parsed),
        "page_meta": parsed.page_meta,
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
    Markdown; under a --model-preset with its own answer format, the answer as its parser
    reads it."""

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
        from_model = result.text_source == TEXT_SOURCE_MODEL
        if self._policy.answer_format != "markdown" and from_model:
            parsed = preset_page(row["text"], read_answer(result, self._policy))
        else:
            parsed = read_page(ref, result, self._layout)
            if self._layout.ocr_format == "html" and from_model:
                row["text"] = parsed.markdown
        if parsed.bad_boxes:
            Metrics.counter(NAMESPACE, "blocks_bad_boxes").inc(parsed.bad_boxes)
        yield row
        for block in block_rows(ref, parsed, result.text_source, self._prov):
            yield beam.pvalue.TaggedOutput(BLOCKS_TAG, block)
        yield beam.pvalue.TaggedOutput(LAYOUT_TAG, page_layout_keyed(ref, parsed))
