"""OCR: rendered pages → Qwen3-VL markdown through RunInference, keyed by page.

Failures come from two places and both end as `failures` rows (stage `inference`):
a request whose result carries an error (the handler retries a failed batch one
page at a time), and whole batches that RunInference's own dead-letter output
(`with_exception_handling`) caught.
"""

from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from vlbeam.pipeline.config import Prompt
from vlbeam.pipeline.elements import Failure, PageImage, PageRef, Provenance, VLRequest, VLResult
from vlbeam.transforms.failures import FAILURES_TAG, NAMESPACE, count_failure

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
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "finish_reason": result.finish_reason,
        "latency_s": result.latency_s,
        "run_id": prov.run_id,
    }


def inference_failure(ref: PageRef, error_type: str, message: str) -> Failure:
    return Failure(
        source_uri=ref.source_uri,
        doc_id=ref.doc_id,
        stage="inference",
        error_type=error_type,
        message=message,
        unit=ref.page_number,
    )


class _ToPageRows(beam.DoFn):
    """(PageRef, PredictionResult) → page row, or a failure for an errored result."""

    def __init__(self, prov: Provenance) -> None:
        self._prov = prov
        self._ok = Metrics.counter(NAMESPACE, "pages_ok")
        self._input_tokens = Metrics.counter(NAMESPACE, "input_tokens")
        self._output_tokens = Metrics.counter(NAMESPACE, "output_tokens")
        self._truncated = Metrics.counter(NAMESPACE, "pages_truncated")
        self._done = 0
        self._started = 0.0
        self._last_log = 0.0

    def start_bundle(self) -> None:
        self._started = self._started or time.monotonic()

    def process(self, keyed):
        ref, prediction = keyed
        result: VLResult = prediction.inference
        if not result.ok:
            failure = inference_failure(ref, result.error_type, result.error_message or "")
            count_failure(failure)
            yield beam.pvalue.TaggedOutput(FAILURES_TAG, failure)
            return
        self._ok.inc()
        self._input_tokens.inc(result.input_tokens or 0)
        self._output_tokens.inc(result.output_tokens or 0)
        if result.finish_reason == "length":
            self._truncated.inc()
        self._progress()
        yield page_row(ref, result, self._prov)

    def _progress(self) -> None:
        self._done += 1
        now = time.monotonic()
        if now - self._last_log >= 10 or self._done == 1:
            self._last_log = now
            rate = self._done / max(now - self._started, 1e-9)
            logger.info("OCR: %d pages done in this worker (%.2f pages/s)", self._done, rate)


def dead_letter_error(exc) -> tuple[str, str]:
    """(error_type, message) from a RunInference dead letter's exception part, which
    Beam gives as `(type, repr(exception), traceback lines)`."""
    if isinstance(exc, BaseException):
        return type(exc).__name__, str(exc) or repr(exc)
    exc_type, exc_repr = exc[0], exc[1]
    lines = [line.strip() for line in (exc[2] if len(exc) > 2 else []) if line.strip()]
    message = lines[-1] if lines else str(exc_repr)
    return getattr(exc_type, "__name__", str(exc_type)), message


class _FailedBatchToFailures(beam.DoFn):
    """RunInference's dead letters: (failed batch of (PageRef, VLRequest), exception)."""

    def process(self, failed):
        batch, exc = failed
        error_type, message = dead_letter_error(exc)
        for ref, _request in batch:
            failure = inference_failure(ref, error_type, message)
            count_failure(failure)
            yield failure


class OcrPages(beam.PTransform):
    """PageImage → dict of `pages` (rows for the `pages` table) and `failures`."""

    def __init__(self, handler: ModelHandler, prompt: Prompt, prov: Provenance) -> None:
        super().__init__()
        self._handler = handler
        self._prompt = prompt
        self._prov = prov

    def expand(self, pages):
        prompt = self._prompt
        main, dead = (
            pages
            | "BuildOcrRequests" >> beam.Map(page_request, prompt)
            | "Qwen3VL-OCR"
            >> RunInference(KeyedModelHandler(self._handler)).with_exception_handling()
        )
        rows = main | "ToPageRows" >> beam.ParDo(_ToPageRows(self._prov)).with_outputs(
            FAILURES_TAG, main="rows"
        )
        batch_failures = dead.failed_inferences | "FailedBatches" >> beam.ParDo(
            _FailedBatchToFailures()
        )
        failures = (rows[FAILURES_TAG], batch_failures) | "OcrFailures" >> beam.Flatten()
        return {"pages": rows.rows, "failures": failures}
