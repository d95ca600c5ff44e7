"""OCR: rendered pages → model requests, and model results → `pages` rows."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.config import Prompt
from vlbeam.schemas.elements import PageImage, PageRef, Provenance, VLRequest, VLResult
from vlbeam.transforms.dead_letter import NAMESPACE
from vlbeam.transforms.model_call import count_usage, model_call_columns
from vlbeam.transforms.progress import ProgressLog

logger = logging.getLogger(__name__)


def page_request(page: PageImage, prompt: Prompt) -> tuple[PageRef, VLRequest]:
    return page.ref, VLRequest(images=(page.image,), prompt=prompt.text)


def page_row(ref: PageRef, result: VLResult, prov: Provenance) -> dict:
    return {
        "doc_id": ref.doc_id,
        "source_uri": ref.source_uri,
        "page_number": ref.page_number,
        "width_px": ref.width_px,
        "height_px": ref.height_px,
        "text": result.text,
        "text_layer": ref.text_layer,
        "model": prov.model,
        "backend": prov.backend,
        "prompt_id": prov.prompt_id,
        **model_call_columns(result, prov),
        "run_id": prov.run_id,
    }


class ToPageRows(beam.DoFn):
    """(PageRef, VLResult) → a `pages` row, counting tokens in Beam metrics."""

    def __init__(self, prov: Provenance) -> None:
        self._prov = prov
        self._ok = Metrics.counter(NAMESPACE, "pages_ok")
        self._truncated = Metrics.counter(NAMESPACE, "pages_truncated")
        self._progress: ProgressLog | None = None

    def setup(self) -> None:
        self._progress = ProgressLog("OCR pages")

    def process(self, keyed):
        ref, result = keyed
        self._ok.inc()
        count_usage(result)
        if result.finish_reason == "length":
            self._truncated.inc()
        self._progress.tick()
        yield page_row(ref, result, self._prov)
