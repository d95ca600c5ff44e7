"""Coarse-to-fine grounding (`--grounding-strategy coarse-to-fine`): the coarse pass's answers →
the refine pass's dense windows, and the coarse pass's `video_windows` rows.

The coarse windows (small descriptors) and the coarse pass's answers are keyed by video and
grouped; per video the answers are read into candidate spans and the refine windows are
planned from them (`media.work_units.plan_refine_windows`, pure), then reshuffled to be
decoded and answered by the same inference stage as every other unit. What is grouped per
video is a few descriptors and answer texts (one per --coarse-window-seconds), never frames.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.elements import Provenance, VideoWindow, VLResult, WindowRef
from vlbeam.transforms.answers.grounding_parse import UnparseableAnswer
from vlbeam.transforms.dead_letter import NAMESPACE
from vlbeam.transforms.grounding import OK_TAG, window_row, window_spans
from vlbeam.transforms.media.work_units import (
    Candidate,
    CoarseAnswer,
    VideoConfig,
    dense_frames,
    plan_refine_windows,
)
from vlbeam.transforms.model_call import count_usage

logger = logging.getLogger(__name__)

ROWS_TAG = "rows"


def coarse_answer(
    window: VideoWindow, ref: WindowRef | None, text: str | None, queries: list[str]
) -> CoarseAnswer:
    """A coarse window's candidates, or None (refine it whole) when it has no answer or its
    answer can't be read."""
    if ref is None:
        return CoarseAnswer(window.index, window.start_s, window.end_s, None)
    try:
        spans = window_spans(ref, text or "", queries)
    except UnparseableAnswer:
        return CoarseAnswer(window.index, window.start_s, window.end_s, None)
    candidates = tuple(
        Candidate(queries.index(query) + 1, span.start_s, span.end_s) for query, span in spans
    )
    return CoarseAnswer(window.index, window.start_s, window.end_s, candidates)


def candidate_queries(answer: CoarseAnswer, queries: list[str]) -> list[str]:
    """What a coarse row says it found: the queries with a candidate (all when unread)."""
    if answer.candidates is None:
        return list(queries)
    numbers = {c.query_number for c in answer.candidates}
    return [q for n, q in enumerate(queries, 1) if n in numbers]


class PlanRefine(beam.DoFn):
    """((doc_id, uri, meta), {"windows": [coarse VideoWindow], "answers": [(WindowRef, VLResult)]})
    → refine VideoWindows (main), coarse `video_windows` rows (`rows`), answered inputs' (uri,
    meta) (`ok`)."""

    def __init__(self, prov: Provenance, queries: list[str], cfg: VideoConfig) -> None:
        self._prov, self._queries, self._cfg = prov, queries, cfg

    def setup(self) -> None:
        self._dense = Metrics.counter(NAMESPACE, "video_frames_dense_planned")
        self._unread = Metrics.counter(NAMESPACE, "coarse_windows_unread")
        self._refine = Metrics.counter(NAMESPACE, "refine_windows_planned")
        self._answered = Metrics.counter(NAMESPACE, "video_windows_ok")  # as refine ones are

    def process(self, grouped):
        _, parts = grouped
        windows = sorted({w.index: w for w in parts["windows"]}.values(), key=lambda w: w.index)
        if not windows:
            return
        results = {ref.window_index: (ref, result) for ref, result in parts["answers"]}
        answers = []
        for window in windows:
            ref, result = results.get(window.index, (None, None))
            answer = coarse_answer(window, ref, result.text if result else None, self._queries)
            answers.append(answer)
            if answer.candidates is None:
                self._unread.inc()
            if ref is not None:
                count_usage(result)
                self._answered.inc()
                found = candidate_queries(answer, self._queries)
                yield beam.pvalue.TaggedOutput(ROWS_TAG, window_row(ref, result, self._prov, found))
                yield beam.pvalue.TaggedOutput(OK_TAG, (ref.source_uri, ref.meta))
        first = windows[0]
        self._dense.inc(dense_frames(first.duration_s, self._cfg))
        refine = plan_refine_windows(first.source, first.duration_s, answers, self._cfg)
        self._refine.inc(len(refine))
        logger.info(
            "%s: %d coarse windows -> %d refine windows", first.source.uri, len(windows),
            len(refine),
        )  # fmt: skip
        yield from refine


def _by_video_window(window: VideoWindow):
    return (window.source.doc_id, window.source.uri, window.source.meta), window


def _by_video_answer(keyed: tuple[WindowRef, VLResult]):
    ref, _ = keyed
    return (ref.doc_id, ref.source_uri, ref.meta), keyed


class RefineFromCoarse(beam.PTransform):
    """(coarse VideoWindows, (WindowRef, VLResult) of the coarse pass) → dict of `units`
    (the refine pass's VideoWindows, spread over the workers), `windows` (the coarse pass's
    `video_windows` rows) and `ok` (the input's (uri, meta) per coarse window answered)."""

    def __init__(self, prov: Provenance, queries: list[str], cfg: VideoConfig) -> None:
        super().__init__()
        self._prov, self._queries, self._cfg = prov, queries, cfg

    def expand(self, inputs):
        coarse_windows, coarse_results = inputs
        grouped = {
            "windows": coarse_windows | "KeyCoarseWindows" >> beam.Map(_by_video_window),
            "answers": coarse_results | "KeyCoarseAnswers" >> beam.Map(_by_video_answer),
        } | "CoarseByVideo" >> beam.CoGroupByKey()
        planned = grouped | "PlanRefineWindows" >> beam.ParDo(
            PlanRefine(self._prov, self._queries, self._cfg)
        ).with_outputs(ROWS_TAG, OK_TAG, main="units")
        return {
            "units": planned.units | "SpreadRefineWindows" >> beam.Reshuffle(),
            "windows": planned[ROWS_TAG],
            "ok": planned[OK_TAG],
        }
