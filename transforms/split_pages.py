"""Split documents into pages: plan page ranges (fan-out), then render each range.

Big PDFs become many `PageRange` elements that are redistributed (Reshuffle), so
one 1,000-page PDF uses every worker. All pdfium/poppler work happens in a helper
process per DoFn instance (`HelperProcess`) with a time bound per page.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.elements import Failure, PageImage, PageRange, PageRef, SourceFile
from vlbeam.transforms.dead_letter import FAILURES_TAG, NAMESPACE, count_failure
from vlbeam.transforms.helper_dofn import HelperDoFn

logger = logging.getLogger(__name__)

NUM_PAGES_TAG = "num_pages"


def read_bytes(uri: str) -> bytes:
    with FileSystems.open(uri, compression_type="uncompressed") as handle:
        return handle.read()


def page_ranges(source: SourceFile, num_pages: int, pages_per_task: int) -> list[PageRange]:
    """Cut pages 1..num_pages into consecutive ranges of at most `pages_per_task`."""
    return [
        PageRange(source, first, min(first + pages_per_task - 1, num_pages), num_pages)
        for first in range(1, num_pages + 1, pages_per_task)
    ]


class _BytesCache:
    """Keeps the last file read, so consecutive ranges of one PDF read it once."""

    def __init__(self) -> None:
        self._uri: str | None = None
        self._data = b""

    def get(self, uri: str) -> bytes:
        if uri != self._uri:
            self._uri, self._data = None, read_bytes(uri)
            self._uri = uri
        return self._data


class _PlanPages(HelperDoFn):
    """SourceFile → PageRange elements (+ `num_pages` per document, + failures)."""

    def process(self, source: SourceFile):
        try:
            if source.kind == "image":
                num_pages = 1
            else:  # each document is planned once: no need to keep its bytes
                data = read_bytes(source.uri)
                num_pages = self._worker.count_pages(source.doc_id, data, self._cfg.password)
        except Exception as exc:
            failure = Failure.from_exception(
                exc, source_uri=source.uri, doc_id=source.doc_id, stage="split"
            )
            count_failure(failure)
            yield beam.pvalue.TaggedOutput(FAILURES_TAG, failure)
            return
        yield beam.pvalue.TaggedOutput(NUM_PAGES_TAG, (source.uri, num_pages))
        yield from page_ranges(source, num_pages, self._cfg.pages_per_task)


class _RenderPages(HelperDoFn):
    """PageRange → PageImage per page (+ a failure per page that can't be rendered)."""

    def __init__(self, cfg: RenderConfig) -> None:
        super().__init__(cfg)
        self._rendered = Metrics.counter(NAMESPACE, "pages_rendered")
        self._cache: _BytesCache | None = None

    def setup(self) -> None:
        super().setup()
        self._cache = _BytesCache()

    def process(self, task: PageRange):
        source = task.source
        try:
            data = self._cache.get(source.uri)
        except Exception as exc:
            for page in task.page_numbers:
                yield self._failure(exc, source, page)
            return
        for page in task.page_numbers:
            try:
                rendered = self._worker.render(source.doc_id, data, source.kind, page, self._cfg)
            except Exception as exc:
                yield self._failure(exc, source, page)
                continue
            self._rendered.inc()
            ref = PageRef(
                doc_id=source.doc_id,
                source_uri=source.uri,
                page_number=page,
                width_px=rendered.width_px,
                height_px=rendered.height_px,
                text_layer=rendered.text_layer,
            )
            yield PageImage(ref=ref, image=rendered.image, image_format=rendered.image_format)
        logger.info(
            "rendered pages %d-%d of %d of %s",
            task.first_page,
            task.last_page,
            task.num_pages,
            source.uri,
        )

    @staticmethod
    def _failure(exc: Exception, source: SourceFile, page: int):
        failure = Failure.from_exception(
            exc, source_uri=source.uri, doc_id=source.doc_id, stage="render", unit=page
        )
        count_failure(failure)
        return beam.pvalue.TaggedOutput(FAILURES_TAG, failure)


class SplitPages(beam.PTransform):
    """SourceFile (pdf or image) → dict of `pages` (PageImage), `num_pages`
    ((uri, n) per document) and `failures`."""

    def __init__(self, cfg: RenderConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, sources):
        planned = sources | "PlanPageRanges" >> beam.ParDo(_PlanPages(self._cfg)).with_outputs(
            FAILURES_TAG, NUM_PAGES_TAG, main="ranges"
        )
        rendered = (
            planned.ranges
            | "SpreadPageRanges" >> beam.Reshuffle()
            | "RenderPages"
            >> beam.ParDo(_RenderPages(self._cfg)).with_outputs(FAILURES_TAG, main="pages")
        )
        failures = (
            planned[FAILURES_TAG],
            rendered[FAILURES_TAG],
        ) | "SplitFailures" >> beam.Flatten()
        return {"pages": rendered.pages, "num_pages": planned[NUM_PAGES_TAG], "failures": failures}
