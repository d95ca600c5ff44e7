"""Temporal grounding: video windows → model requests; answers → `video_windows` rows,
`video_events` rows (spans merged across windows) and `parse` failures."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.config import Prompt
from vlbeam.schemas.elements import Provenance, VLRequest, VLResult, WindowFrames, WindowRef
from vlbeam.schemas.meta import Meta, meta_column
from vlbeam.transforms.answers.degenerate import quality_flags
from vlbeam.transforms.answers.grounding_parse import (
    MergedSpan,
    Span,
    UnparseableAnswer,
    clamp_spans,
    merge_spans,
    parse_spans,
)
from vlbeam.transforms.dead_letter import FAILURES_TAG, NAMESPACE, count_failure
from vlbeam.transforms.model_call import count_usage, model_call_columns
from vlbeam.transforms.progress import ProgressLog

logger = logging.getLogger(__name__)

SPANS_TAG = "spans"
OK_TAG = "ok"
RAW_TEXT_LIMIT = 20_000


def window_request(window: WindowFrames, prompt: Prompt) -> tuple[WindowRef, VLRequest]:
    return window.ref, VLRequest(
        images=window.frames, prompt=prompt.text, frame_times_s=window.ref.frame_times_s
    )


def window_row(
    ref: WindowRef,
    result: VLResult,
    prov: Provenance,
    candidate_queries: list[str] | None = None,
) -> dict:
    """A `video_windows` row; `candidate_queries` for a coarse window (see the schema)."""
    refine = ref.grounding_pass.name == "refine"
    return {
        "doc_id": ref.doc_id,
        "source_uri": ref.source_uri,
        "window_index": ref.window_index,
        "start_s": ref.start_s,
        "end_s": ref.end_s,
        "frame_times_s": list(ref.frame_times_s),
        "num_frames": len(ref.frame_times_s),
        "model": prov.model,
        "backend": prov.backend,
        "prompt_id": prov.prompt_id,
        "raw_output": result.text,
        "quality_flags": quality_flags(result.text, result.finish_reason, blank=False),
        **model_call_columns(result, prov),
        "grounding_pass": ref.grounding_pass.name,
        "candidate_queries": candidate_queries,
        "coarse_windows": list(ref.grounding_pass.coarse_indexes) if refine else None,
        "run_id": prov.run_id,
        "meta": meta_column(ref.meta),
    }


def assign_queries(spans: list[Span], queries: list[str]) -> list[tuple[str | None, Span]]:
    """Which query each span answers (None for the event timeline)."""
    if not queries:
        return [(None, span) for span in spans]
    assigned = []
    for span in spans:
        if span.query_index is not None and 1 <= span.query_index <= len(queries):
            assigned.append((queries[span.query_index - 1], span))
        elif len(queries) == 1:
            assigned.append((queries[0], span))
        else:
            raise UnparseableAnswer(
                f"a span names no valid query number (1..{len(queries)}): {span}"
            )
    return assigned


def window_spans(ref: WindowRef, text: str, queries: list[str]) -> list[tuple[str | None, Span]]:
    """Parse, clamp to the window, and attribute spans to queries. A refine window keeps the
    spans of the queries it was planned for only (a query with no coarse candidate gets no
    event, whatever a window planned for another query sees)."""
    spans = assign_queries(clamp_spans(parse_spans(text), ref.start_s, ref.end_s), queries)
    wanted = ref.grounding_pass.query_numbers
    if not wanted:
        return spans
    kept = {queries[n - 1] for n in wanted if 1 <= n <= len(queries)}
    return [(query, span) for query, span in spans if query in kept]


def event_row(
    doc: tuple[str, str],
    merged: MergedSpan,
    prov: Provenance,
    coarse_windows: list[int] | None = None,
    meta: Meta = None,
) -> dict:
    """`doc`: the video's (doc_id, source_uri); `meta`: the keys its input carried."""
    doc_id, uri = doc
    return {
        "doc_id": doc_id,
        "source_uri": uri,
        "query": merged.query,
        "start_s": merged.start_s,
        "end_s": merged.end_s,
        "description": merged.description,
        "window_indexes": list(merged.window_indexes),
        "coarse_window_indexes": coarse_windows,
        "model": prov.model,
        "prompt_id": prov.prompt_id,
        "run_id": prov.run_id,
        "meta": meta_column(meta),
    }


class ParseWindows(beam.DoFn):
    """(WindowRef, VLResult) → a `video_windows` row (always, raw answer kept), spans
    keyed by (doc, query) on `spans`, the input's (uri, meta) on `ok`, or a `parse` failure."""

    def __init__(self, prov: Provenance, queries: list[str]) -> None:
        self._prov = prov
        self._queries = queries
        self._windows = Metrics.counter(NAMESPACE, "video_windows_ok")
        self._progress: ProgressLog | None = None

    def setup(self) -> None:
        self._progress = ProgressLog("video windows")

    def process(self, keyed):
        ref, result = keyed
        self._progress.tick()
        count_usage(result)
        yield window_row(ref, result, self._prov)
        try:
            spans = window_spans(ref, result.text or "", self._queries)
        except UnparseableAnswer as exc:
            raw = (result.text or "")[:RAW_TEXT_LIMIT]
            failure = ref.failure("parse", "UnparseableAnswer", f"{exc}; raw answer: {raw}")
            count_failure(failure)
            yield beam.pvalue.TaggedOutput(FAILURES_TAG, failure)
            return
        self._windows.inc()
        yield beam.pvalue.TaggedOutput(OK_TAG, (ref.source_uri, ref.meta))
        coarse = ref.grounding_pass.coarse_indexes if ref.grounding_pass.name == "refine" else None
        for query, span in spans:
            key = (ref.doc_id, ref.source_uri, ref.meta, query)
            yield beam.pvalue.TaggedOutput(SPANS_TAG, (key, (ref.window_index, span, coarse)))


def _merge(grouped, gap_s: float, prov: Provenance):
    """Merged spans of one (video, its carried keys, query); a refine pass's events also list
    the coarse windows behind the windows they came from."""
    (doc_id, uri, meta, query), found = grouped
    found = list(found)
    coarse_of = {index: coarse for index, _, coarse in found if coarse is not None}
    for merged in merge_spans(((index, span) for index, span, _ in found), query, gap_s):
        coarse = None
        if coarse_of:
            coarse = sorted({c for i in merged.window_indexes for c in coarse_of.get(i, ())})
        yield event_row((doc_id, uri), merged, prov, coarse, meta)


class GroundVideo(beam.PTransform):
    """(WindowRef, VLResult) → dict of `windows` rows, `events` rows, `ok` (uri, meta) of
    each answered window, `failures`."""

    def __init__(self, prov: Provenance, queries: list[str], gap_s: float) -> None:
        super().__init__()
        self._prov, self._queries, self._gap_s = prov, queries, gap_s

    def expand(self, results):
        parsed = results | "ParseAnswers" >> beam.ParDo(
            ParseWindows(self._prov, self._queries)
        ).with_outputs(FAILURES_TAG, SPANS_TAG, OK_TAG, main="windows")
        events = (
            parsed[SPANS_TAG]
            | "GroupSpans" >> beam.GroupByKey()
            | "MergeSpans" >> beam.FlatMap(_merge, self._gap_s, self._prov)
        )
        return {
            "windows": parsed.windows,
            "events": events,
            "ok": parsed[OK_TAG],
            "failures": parsed[FAILURES_TAG],
        }
