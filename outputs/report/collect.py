"""The report's data: the summary over every row of a run, and the bounded selection of what
it shows (suspects first), computed on Arrow columns."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from vlbeam.outputs.report.load import RunData, read_rows
from vlbeam.outputs.report.model import (
    PAGE_KINDS,
    QUALITY_FLAGS,
    STAGES,
    Report,
    ReportLimits,
)
from vlbeam.outputs.report.videos import video_view
from vlbeam.outputs.report.views import (
    Document,
    DocumentView,
    ExtractionView,
    Failure,
    FlaggedPage,
    PageRow,
    PageView,
    Summary,
    Truncated,
    clip,
    extraction_order,
)


def quality_flags(value: list[str] | None) -> list[str]:
    """A `quality_flags` cell as a list of flag names. The pages schema makes the column a
    list of strings; any other shape is an error, not something to guess at."""
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"quality_flags must be a list of strings, not {value!r:.80}")
    return [v for v in value if v]


def _count(table: pa.Table, column: str) -> dict[str, int]:
    if table.num_rows == 0 or column not in table.column_names:
        return {}
    counts = pc.value_counts(table.column(column)).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in counts}


def _sum(table: pa.Table, column: str) -> float | None:
    if table.num_rows == 0 or column not in table.column_names:
        return None
    value = pc.sum(table.column(column)).as_py()
    return value


def frames_by_pass(windows: pa.Table) -> dict[str, int]:
    """Frames sent per grounding pass (`video_windows.num_frames`); rows written before the
    passes existed count as dense."""
    if windows.num_rows == 0 or "num_frames" not in windows.column_names:
        return {}
    if "grounding_pass" not in windows.column_names:
        return {"dense": int(pc.sum(windows.column("num_frames")).as_py() or 0)}
    passes = pc.fill_null(windows.column("grounding_pass"), "dense")
    grouped = pa.table({"pass": passes, "frames": windows.column("num_frames")})
    rows = grouped.group_by("pass").aggregate([("frames", "sum")]).to_pylist()
    return {r["pass"]: int(r["frames_sum"] or 0) for r in rows}


def dense_frames_planned(videos: pa.Table, manifest: dict) -> int | None:
    """The frames a dense pass would have sent for these videos, re-planned from their
    durations with the run's window and sampling options (None when the options don't
    make a valid plan)."""
    from vlbeam.transforms.media.video_decode import SamplingConfig
    from vlbeam.transforms.media.work_units import VideoConfig, dense_frames

    options = manifest.get("options") or {}
    defaults = VideoConfig()
    try:
        cfg = VideoConfig(
            window_s=float(options.get("window_seconds") or defaults.window_s),
            overlap_s=float(options.get("window_overlap_seconds", defaults.overlap_s)),
            sampling=SamplingConfig(
                fps=float(options.get("fps") or defaults.sampling.fps),
                max_frames=int(
                    options.get("max_frames_per_window") or defaults.sampling.max_frames
                ),
            ),
        )
    except (TypeError, ValueError):
        return None
    durations = [d for d in videos.column("duration_s").to_pylist() if d]
    return sum(dense_frames(d, cfg) for d in durations)


def _distinct(*columns) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for column in columns:
        for value in pc.unique(column).to_pylist():
            if value:
                found[str(value)] = None
    return tuple(found)


def _isin(table: pa.Table, column: str, values) -> pa.Array:
    """Row mask: `column` is one of `values` (never true for nulls)."""
    value_set = pa.array(sorted(v for v in values if v is not None), pa.string())
    return pc.fill_null(pc.is_in(table.column(column), value_set=value_set), False)


def _eq(table: pa.Table, column: str, value) -> pa.Array:
    return pc.fill_null(pc.equal(table.column(column), value), False)


def _rows(table: pa.Table, mask=None, sort=None, limit: int | None = None) -> list[dict]:
    """Rows as dicts: filtered, sorted, cut (Arrow does the work; only what's returned becomes
    Python objects)."""
    if mask is not None:
        table = table.filter(mask)
    if sort:
        table = table.sort_by(sort)
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()


def _ranked(table: pa.Table, suspects: set[str]) -> pa.Table:
    """Documents with a `_rank`: failed 0, partial 1, with suspect pages/windows 2, else 3."""
    rank = pc.if_else(
        _eq(table, "status", "failed"),
        0,
        pc.if_else(
            _eq(table, "status", "partial"),
            1,
            pc.if_else(_isin(table, "doc_id", suspects), 2, 3),
        ),
    )
    return table.append_column("_rank", rank).sort_by(
        [("_rank", "ascending"), ("source_uri", "ascending")]
    )


def _flagged_pages(pages: pa.Table) -> list[FlaggedPage]:
    """Every page with a quality flag."""
    if QUALITY_FLAGS not in pages.column_names or pages.num_rows == 0:
        return []
    column = pages.column(QUALITY_FLAGS)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise ValueError(f"pages.{QUALITY_FLAGS} must be a list of strings, not {column.type}")
    pages = pages.filter(pc.fill_null(pc.greater(pc.list_value_length(column), 0), False))
    found = []
    keep = ["doc_id", "source_uri", "page_number", QUALITY_FLAGS]
    for row in pages.select(keep).to_pylist():
        flags = quality_flags(row.pop(QUALITY_FLAGS))
        if flags:
            found.append(FlaggedPage(**row, flags=tuple(flags)))
    return found


def collect(run: RunData, limits: ReportLimits | None = None) -> Report:
    """The summary over every row, and the bounded selection of what the report shows.

    Counting and choosing run on Arrow columns; only the rows the report shows become Python
    objects, so memory follows the report's size, not the run's."""
    limits = limits or ReportLimits()
    t = run.tables
    docs, pages, windows = t["documents"], t["pages"], t["video_windows"]
    events, failures = t["video_events"], t["failures"]
    manifest = run.manifest or {}
    video_ids = set(docs.filter(_eq(docs, "kind", "video")).column("doc_id").to_pylist())
    video_ids.discard(None)

    # failures of one page or window, split by the kind of their document
    unit_failures = failures.filter(
        pc.and_(pc.is_valid(failures.column("doc_id")), pc.is_valid(failures.column("unit")))
    )
    on_video = _isin(unit_failures, "doc_id", video_ids)
    page_failures = unit_failures.filter(pc.invert(on_video))
    window_failures = unit_failures.filter(on_video)

    def distinct_units(table: pa.Table) -> int:
        return table.group_by(["doc_id", "unit"]).aggregate([]).num_rows if table.num_rows else 0

    truncated_pages = pages.filter(_eq(pages, "finish_reason", "length"))
    truncated_windows = windows.filter(_eq(windows, "finish_reason", "length"))
    has_flags = QUALITY_FLAGS in pages.column_names
    flagged = _flagged_pages(pages)
    flags_of = {(r.doc_id, r.page_number): r.flags for r in flagged}

    wall_s = manifest.get("wall_s")
    tokens_in = sum(v or 0 for v in (_sum(pages, "input_tokens"), _sum(windows, "input_tokens")))
    tokens_out = sum(v or 0 for v in (_sum(pages, "output_tokens"), _sum(windows, "output_tokens")))
    costs = [c for c in (_sum(pages, "cost_usd"), _sum(windows, "cost_usd")) if c is not None]
    by_stage_type = (
        failures.group_by(["stage", "error_type"]).aggregate([("stage", "count")]).to_pylist()
        if failures.num_rows
        else []
    )
    page_kinds = _isin(docs, "kind", PAGE_KINDS)
    by_pass = frames_by_pass(windows)
    video_docs_all = docs.filter(_eq(docs, "kind", "video"))
    summary = Summary(
        documents=docs.num_rows,
        documents_by_status=_count(docs, "status"),
        documents_by_kind=_count(docs, "kind"),
        pages_expected=int(_sum(docs.filter(page_kinds), "num_pages") or 0),
        pages_ok=pages.num_rows,
        pages_failed=distinct_units(page_failures),
        pages_truncated=truncated_pages.num_rows,
        pages_flagged=len(flagged) if has_flags else None,
        videos=len(video_ids),
        windows_answered=windows.num_rows,
        windows_failed=distinct_units(window_failures),
        windows_truncated=truncated_windows.num_rows,
        events=events.num_rows,
        failures=failures.num_rows,
        failures_by_stage_type=tuple(
            sorted(
                ((r["stage"], r["error_type"], r["stage_count"]) for r in by_stage_type),
                key=lambda x: (STAGES.index(x[0]) if x[0] in STAGES else 99, -x[2], x[1]),
            )
        ),
        input_tokens=int(tokens_in),
        output_tokens=int(tokens_out),
        cost_usd=sum(costs) if costs else None,
        wall_s=wall_s,
        pages_per_s=(pages.num_rows / wall_s) if wall_s else None,
        models=_distinct(docs.column("model"), pages.column("model"), windows.column("model")),
        backends=_distinct(docs.column("backend"), pages.column("backend")),
        prompt_ids=_distinct(
            docs.column("prompt_id"), pages.column("prompt_id"), windows.column("prompt_id")
        ),
        served_models=_distinct(
            *(
                tb.column("served_model")
                for tb in (pages, windows)
                if "served_model" in tb.column_names
            )
        ),
        providers=_distinct(
            *(tb.column("provider") for tb in (pages, windows) if "provider" in tb.column_names)
        ),
        max_new_tokens=(manifest.get("options") or {}).get("max_new_tokens"),
        frames_by_pass=tuple(sorted(by_pass.items())),
        dense_frames=dense_frames_planned(video_docs_all, manifest) if "coarse" in by_pass
        else None,
    )  # fmt: skip

    # suspect tables, each cut to max_rows
    stage_rank = pc.fill_null(
        pc.index_in(failures.column("stage"), value_set=pa.array(STAGES)), len(STAGES)
    )
    fail_view = tuple(
        _failure(row, limits.max_text_chars)
        for row in _rows(
            failures.append_column("_rank", stage_rank),
            sort=[("_rank", "ascending"), ("source_uri", "ascending"), ("unit", "ascending")],
            limit=limits.max_rows,
        )
    )
    by_place = [("source_uri", "ascending")]
    truncated = [
        Truncated.from_row(r, kind="page")
        for r in _rows(
            truncated_pages, sort=[*by_place, ("page_number", "ascending")], limit=limits.max_rows
        )
    ] + [
        Truncated.from_row(r, kind="window")
        for r in _rows(
            truncated_windows,
            sort=[*by_place, ("window_index", "ascending")],
            limit=limits.max_rows,
        )
    ]
    truncated.sort(key=lambda r: (r.source_uri, r.page_number or r.window_index))
    flagged.sort(key=lambda r: (r.source_uri, r.page_number))
    not_ok_docs = docs.filter(_isin(docs, "status", ("partial", "failed")))
    not_ok = tuple(
        Document.from_row(r)
        for r in _rows(
            not_ok_docs.append_column("_failed", _eq(not_ok_docs, "status", "failed")),
            sort=[("_failed", "ascending"), ("source_uri", "ascending")],
            limit=limits.max_rows,
        )
    )

    # documents: suspects first
    suspects = (
        set(truncated_pages.column("doc_id").to_pylist())
        | set(truncated_windows.column("doc_id").to_pylist())
        | {r.doc_id for r in flagged}
        | set(unit_failures.column("doc_id").to_pylist())
    )
    page_docs = docs.filter(
        pc.and_(
            pc.and_(page_kinds, pc.is_valid(docs.column("doc_id"))),
            pc.invert(_eq(docs, "status", "skipped")),
        )
    )
    shown_docs = [
        Document.from_row(r)
        for r in _rows(_ranked(page_docs, suspects), limit=limits.max_documents)
    ]
    doc_views = _document_views(run, pages, failures, shown_docs, flags_of, limits)

    # videos: suspects first
    video_docs = docs.filter(
        pc.and_(_eq(docs, "kind", "video"), pc.invert(_eq(docs, "status", "skipped")))
    )
    shown_videos = [
        Document.from_row(r) for r in _rows(_ranked(video_docs, suspects), limit=limits.max_videos)
    ]
    video_shown_ids = {d.doc_id for d in shown_videos}
    win_rows: dict[str, list[dict]] = {}
    for row in _rows(windows, _isin(windows, "doc_id", video_shown_ids)):
        if row.get("grounding_pass") != "coarse":  # the timeline draws the windows grounded
            win_rows.setdefault(row["doc_id"], []).append(row)
    event_rows: dict[str, list[dict]] = {}
    for row in _rows(events, _isin(events, "doc_id", video_shown_ids)):
        event_rows.setdefault(row["doc_id"], []).append(row)
    video_failures: dict[str, list[Failure]] = {}
    for row in _rows(failures, _isin(failures, "doc_id", video_shown_ids)):
        video_failures.setdefault(row["doc_id"], []).append(_failure(row))
    queries = list(dict.fromkeys((manifest.get("options") or {}).get("query") or []))
    video_views = tuple(
        video_view(
            doc,
            win_rows.get(doc.doc_id, []),
            event_rows.get(doc.doc_id, []),
            video_failures.get(doc.doc_id, []),
            queries,
            manifest,
            limits,
        )
        for doc in shown_videos
    )

    return Report(
        run_id=run.run_id,
        manifest=run.manifest,
        limits=limits,
        summary=summary,
        failures=fail_view,
        failures_total=failures.num_rows,
        truncated=tuple(truncated[: limits.max_rows]),
        truncated_total=truncated_pages.num_rows + truncated_windows.num_rows,
        flagged=tuple(flagged[: limits.max_rows]),
        flagged_total=len(flagged),
        has_quality_flags=has_flags,
        not_ok=not_ok,
        not_ok_total=not_ok_docs.num_rows,
        documents=doc_views,
        documents_total=page_docs.num_rows,
        videos=video_views,
        videos_total=video_docs.num_rows,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


def _failure(row: dict, max_chars: int | None = None) -> Failure:
    """A failures row as a view, its message cut to `max_chars` when given."""
    if max_chars is None:
        return Failure.from_row(row)
    message, cut = clip(row["message"], max_chars)
    return Failure.from_row(row, message=message, message_cut=cut)


def _document_views(
    run: RunData,
    pages: pa.Table,
    failures: pa.Table,
    shown_docs: list[Document],
    flags_of: dict[tuple[str, int], tuple[str, ...]],
    limits: ReportLimits,
) -> tuple[DocumentView, ...]:
    """The shown documents, each with its suspect pages first, then its first pages, up to
    the limit; only the chosen pages' text is read back from Parquet."""
    shown_ids = {d.doc_id for d in shown_docs}
    page_rows: dict[str, dict[int, dict]] = {}
    for row in _rows(pages, _isin(pages, "doc_id", shown_ids)):
        page_rows.setdefault(row["doc_id"], {})[row["page_number"]] = row
    shown_failures = [_failure(r) for r in _rows(failures, _isin(failures, "doc_id", shown_ids))]
    unit_fails: dict[str, dict[int, list[Failure]]] = {}
    for f in shown_failures:
        if f.unit is not None:
            unit_fails.setdefault(f.doc_id or "", {}).setdefault(f.unit, []).append(f)
    chosen_of: dict[str, list[int]] = {}
    totals: dict[str, int] = {}
    for doc in shown_docs:
        did = doc.doc_id or ""
        rows, fails = page_rows.get(did, {}), unit_fails.get(did, {})
        numbers = sorted(set(rows) | set(fails))
        suspect = [
            n
            for n in numbers
            if n in fails
            or (did, n) in flags_of
            or (rows.get(n) or {}).get("finish_reason") == "length"
        ]
        chosen = suspect[: limits.max_pages_per_document]
        chosen += [n for n in numbers if n not in set(chosen)][
            : limits.max_pages_per_document - len(chosen)
        ]
        chosen_of[did] = sorted(chosen)
        totals[did] = len(numbers)
    extracted: dict[str, list[ExtractionView]] = {}
    for row in read_rows(run, "extractions", shown_ids):
        extracted.setdefault(row["doc_id"], []).append(ExtractionView.from_row(row))
    # the chosen pages' text, read now
    texts: dict[tuple[str, int], dict] = {}
    for row in read_rows(run, "pages", set(chosen_of)):
        if row["page_number"] in chosen_of.get(row["doc_id"], ()):
            texts[(row["doc_id"], row["page_number"])] = row
    views = []
    for doc in shown_docs:
        did = doc.doc_id or ""
        rows, fails = page_rows.get(did, {}), unit_fails.get(did, {})
        page_views = []
        for n in chosen_of[did]:
            row, full = rows.get(n), texts.get((did, n)) or {}
            text, text_cut = clip(full.get("text"), limits.max_text_chars)
            layer, layer_cut = clip(full.get("text_layer"), limits.max_text_chars)
            page_views.append(
                PageView(
                    page_number=n,
                    row=PageRow.from_row(row) if row else None,
                    flags=flags_of.get((did, n), ()),
                    failures=tuple(fails.get(n, ())),
                    truncated=bool(row) and row.get("finish_reason") == "length",
                    text=text,
                    text_cut=text_cut,
                    text_layer=layer,
                    text_layer_cut=layer_cut,
                )
            )
        views.append(
            DocumentView(
                doc=doc,
                pages=tuple(page_views),
                pages_total=totals[did],
                pages_omitted=totals[did] - len(page_views),
                failures=tuple(f for f in shown_failures if f.doc_id == did and f.unit is None),
                extractions=tuple(sorted(extracted.get(did, ()), key=extraction_order)),
            )
        )
    return tuple(views)
