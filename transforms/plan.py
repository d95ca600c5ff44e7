"""Sources → work units: page ranges of documents and time windows of videos.

What crosses the shuffle is small descriptors only (`PageRange`, `VideoWindow`); the pixels
are made where the model is fed (`transforms/inference.py`).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.elements import SourceFile
from vlbeam.transforms.dead_letter import FAILURES_TAG, NAMESPACE, dead_letter
from vlbeam.transforms.document_pages import plan_pages
from vlbeam.transforms.helper_dofn import HelperDoFn
from vlbeam.transforms.media.work_units import VideoConfig
from vlbeam.transforms.run_ledger import RunLedger
from vlbeam.transforms.video_frames import plan_video

FACTS_TAG = "facts"


class _PlanUnits(HelperDoFn):
    """SourceFile → its work units, its `DocumentFacts`, or a `split` failure."""

    def __init__(
        self, render: RenderConfig, video: VideoConfig, ledger: RunLedger | None = None
    ) -> None:
        super().__init__(max(render.max_memory_mb, video.max_memory_mb))
        self._render, self._video, self._ledger = render, video, ledger
        self._planned = Metrics.counter(NAMESPACE, "units_planned")

    def process(self, source: SourceFile):
        try:
            if source.kind == "video":
                facts, units = plan_video(self._helper, source, self._video)
            else:
                facts, units = plan_pages(self._helper, source, self._render)
        except Exception as exc:
            yield dead_letter(source.failure(exc, "split"))
            return
        count = sum(len(u.page_numbers) if hasattr(u, "page_numbers") else 1 for u in units)
        self._planned.inc(count)  # pages and windows: what progress counts against
        if self._ledger is not None:
            self._ledger.add(units_planned=count)
        yield beam.pvalue.TaggedOutput(FACTS_TAG, facts)
        yield from units


class PlanWork(beam.PTransform):
    """SourceFile (pdf, image, video) → dict of `units` (PageRange / VideoWindow, spread over
    the workers), `facts` (DocumentFacts) and `failures`."""

    def __init__(
        self, render: RenderConfig, video: VideoConfig, ledger: RunLedger | None = None
    ) -> None:
        super().__init__()
        self._render, self._video, self._ledger = render, video, ledger

    def expand(self, sources):
        planned = sources | "PlanUnits" >> beam.ParDo(
            _PlanUnits(self._render, self._video, self._ledger)
        ).with_outputs(FAILURES_TAG, FACTS_TAG, main="units")
        return {
            "units": planned.units | "SpreadUnits" >> beam.Reshuffle(),
            "facts": planned[FACTS_TAG],
            "failures": planned[FAILURES_TAG],
        }
