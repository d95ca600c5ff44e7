"""A document's pages through the worker's helper process: counted (to plan its page ranges)
and rendered (a range → its pages).

Planning counts a PDF's pages and cuts them into `PageRange`s of `pages_per_task` pages
(`media.work_units.page_ranges`), which are shuffled so one big PDF spreads over every worker.
Rendering happens later, in the stage that feeds the model (`transforms/inference.py`), so
pixels never cross a shuffle. All pdfium/poppler work happens in the worker's helper process
with a time bound per page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from apache_beam.metrics import Metrics

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.elements import (
    DocumentFacts,
    Failure,
    PageImage,
    PageRange,
    PageRef,
    SourceFile,
)
from vlbeam.transforms.dead_letter import NAMESPACE
from vlbeam.transforms.media.helper_process import HelperProcess
from vlbeam.transforms.media.pdf_passwords import pdf_password, with_pdf_password
from vlbeam.transforms.media.work_units import page_ranges

logger = logging.getLogger(__name__)


def plan_pages(
    helper: HelperProcess, source: SourceFile, cfg: RenderConfig
) -> tuple[DocumentFacts, list[PageRange]]:
    """Count a document's pages (an image is one page) and cut them into ranges."""
    if source.kind == "image":
        num_pages = 1
    else:  # each document is planned once: no need to keep its bytes
        password = pdf_password(cfg, source.uri, source.content_sha256)  # never in the options
        num_pages = helper.count_pages(source.doc_id, source.uri, password)  # read by it
    return DocumentFacts(source.uri, num_pages=num_pages, meta=source.meta), page_ranges(
        source, num_pages, cfg.pages_per_task
    )


class PageRenderer:
    """Renders page ranges through a helper process, which reads each document itself from
    its URI (this process never holds a document's bytes) and keeps it open across the
    consecutive ranges of one PDF. With `counted=False` it doesn't count `pages_rendered`
    (the caller does: a helper-pool thread can't update Beam metrics)."""

    def __init__(self, cfg: RenderConfig, counted: bool = True) -> None:
        self._cfg = cfg
        self._rendered = Metrics.counter(NAMESPACE, "pages_rendered") if counted else None

    def pages(self, helper: HelperProcess, task: PageRange) -> Iterator[PageImage | Failure]:
        """Each page of the range, rendered, or a `render` failure for that page."""
        source = task.source
        try:
            cfg = with_pdf_password(self._cfg, source.uri, source.content_sha256)
        except Exception as exc:  # an unreadable passwords file: every page fails
            for page in task.page_numbers:
                yield _render_failure(exc, source, page)
            return
        for page in task.page_numbers:
            try:
                rendered = helper.render(source.doc_id, source.uri, source.kind, page, cfg)
            except Exception as exc:
                yield _render_failure(exc, source, page)
                continue
            if self._rendered is not None:
                self._rendered.inc()
            ref = PageRef(
                doc_id=source.doc_id,
                source_uri=source.uri,
                page_number=page,
                width_px=rendered.width_px,
                height_px=rendered.height_px,
                text_layer=rendered.text_layer,
                blank=rendered.blank,
                image_coverage=rendered.image_coverage,
                meta=source.meta,
                page_width=rendered.page_width,
                page_height=rendered.page_height,
                page_unit=rendered.page_unit,
                text_lines=rendered.text_lines,
            )
            yield PageImage(ref=ref, image=rendered.image, image_format=rendered.image_format)
        logger.info(
            "rendered pages %d-%d of %d of %s",
            task.first_page,
            task.last_page,
            task.num_pages,
            source.uri,
        )


def _render_failure(exc: Exception, source: SourceFile, page: int) -> Failure:
    return source.failure(exc, "render", page)
