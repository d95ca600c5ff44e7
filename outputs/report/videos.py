"""A shown video's view: its windows (answered, failed or missing, placed by the job's window
plan when it agrees with the answered ones) and one timeline of spans per query."""

from __future__ import annotations

from vlbeam.outputs.report.model import MAX_DESCRIPTION_CHARS, ReportLimits
from vlbeam.outputs.report.views import (
    Document,
    Failure,
    Span,
    Timeline,
    VideoView,
    WindowView,
    clip,
)


def _window_plan(manifest: dict | None, duration_s: float | None) -> list[tuple[float, float]]:
    """The windows the job planned for a video of this duration (same arithmetic as the job)."""
    if not duration_s or duration_s <= 0:
        return []
    from vlbeam.schemas.elements import SourceFile
    from vlbeam.transforms.media.work_units import VideoConfig, plan_windows

    options = (manifest or {}).get("options") or {}
    defaults = VideoConfig()
    try:
        cfg = VideoConfig(
            window_s=float(options.get("window_seconds") or defaults.window_s),
            overlap_s=float(options.get("window_overlap_seconds", defaults.overlap_s)),
        )
        windows = plan_windows(SourceFile("plan", None, "video", None), duration_s, cfg)
    except (TypeError, ValueError):
        return []
    if len(windows) > 100_000:
        return []
    return [(w.start_s, w.end_s) for w in windows]


def _lanes(spans: list[tuple[float, float]]) -> tuple[list[int], int]:
    """Greedy lane assignment so overlapping (start, end) spans don't cover each other:
    (each span's lane, how many lanes)."""
    ends: list[float] = []
    lanes: list[int] = []
    for start, end in spans:
        for lane, last in enumerate(ends):
            if start >= last:
                ends[lane] = end
                lanes.append(lane)
                break
        else:
            if len(ends) < 8:
                ends.append(end)
                lanes.append(len(ends) - 1)
            else:  # too crowded: the lane that frees first
                lane = min(range(len(ends)), key=ends.__getitem__)
                ends[lane] = max(ends[lane], end)
                lanes.append(lane)
    return lanes, max(1, len(ends))


def video_view(
    doc: Document,
    win_rows: list[dict],
    event_rows: list[dict],
    failures: list[Failure],
    queries: list[str],
    manifest: dict,
    limits: ReportLimits,
) -> VideoView:
    answered = {w["window_index"]: w for w in win_rows}
    failed: dict[int, list[Failure]] = {}
    for failure in failures:
        if failure.unit is not None:
            failed.setdefault(failure.unit, []).append(failure)
    duration = doc.duration_s or max(
        [w["end_s"] for w in win_rows] + [e["end_s"] for e in event_rows] + [0.0]
    )
    plan = _window_plan(manifest, duration)
    # trust the plan only if it agrees with every window the model answered
    if any(
        i >= len(plan)
        or abs(plan[i][0] - w["start_s"]) > 1e-3
        or abs(plan[i][1] - w["end_s"]) > 1e-3
        for i, w in answered.items()
    ):
        plan = []
    indexes = sorted(set(answered) | set(failed) | set(range(len(plan))))
    window_views: list[WindowView] = []
    unplaced: list[WindowView] = []
    for i in indexes:
        if i in answered:
            start, end = answered[i]["start_s"], answered[i]["end_s"]
        elif i < len(plan):
            start, end = plan[i]
        else:
            start = end = None
        state = "failed" if i in failed else ("ok" if i in answered else "missing")
        view = WindowView(i, start, end, state, tuple(failed.get(i, ())))
        (window_views if start is not None else unplaced).append(view)
    names: list[str | None] = list(queries)
    for row in event_rows:
        if row["query"] not in names:
            names.append(row["query"])
    if not names:
        names = [None]
    max_description = min(limits.max_text_chars, MAX_DESCRIPTION_CHARS)
    timelines = []
    for query in names[: limits.max_timelines_per_video]:
        rows = sorted(
            (e for e in event_rows if e["query"] == query),
            key=lambda e: (e["start_s"], e["end_s"]),
        )
        shown = rows[: limits.max_spans_per_timeline]
        lane_of, lanes = _lanes([(e["start_s"], e["end_s"]) for e in shown])
        spans = []
        for row, lane in zip(shown, lane_of, strict=True):
            description, cut = clip(row.get("description"), max_description)
            spans.append(
                Span(
                    start_s=row["start_s"],
                    end_s=row["end_s"],
                    description=description,
                    description_cut=cut,
                    window_indexes=tuple(row.get("window_indexes") or ()),
                    lane=lane,
                )
            )
        timelines.append(Timeline(query, tuple(spans), lanes, spans_total=len(rows)))
    return VideoView(
        doc=doc,
        duration_s=duration,
        windows=tuple(window_views),
        unplaced_windows=tuple(unplaced),
        timelines=tuple(timelines),
        timelines_total=len(names),
        failures=tuple(f for f in failures if f.unit is None),
    )
