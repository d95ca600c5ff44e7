"""`vlbeam report DIR [--run RUN_ID] -o report.html`: one self-contained HTML QA report of a run.

The file holds everything inline (CSS, one small script, thumbnails as `data:` URIs) and names
no external URL: it opens from a laptop or straight from a bucket, with no server. A
Content-Security-Policy in the page allows only its own script (by hash), inline styles and
`data:` images, so nothing in it can load or send anything even if it tried.

How it is built, in three steps that tests can call one by one:

1. `load_run(DIR, run_id)` reads the run's partition of every table (`DIR/<table>/run=<id>/`)
   and its manifest (`DIR/_runs/<id>.json`). Heavy text columns are not read here.
2. `collect(run, limits)` computes the summary over *all* rows, then picks what to show:
   suspects first (failures, pages cut off by --max-new-tokens, pages with quality flags,
   partial and failed documents), then documents, each bounded (`ReportLimits`), with counts of
   what was left out. Only the chosen pages' text is read back from Parquet.
3. `add_thumbnails(report, ...)` re-renders thumbnails from each document's `source_uri` at
   report time, in vlbeam's helper process (the same time and memory bounds as the job):
   pypdfium2 for a PDF page, PIL for an image, PyAV for the video frame at a span's start. A
   source that is gone or whose content changed since the run (PDF/image: SHA-256 differs from
   `doc_id`; video: size differs) gets a placeholder saying so. Thumbnails are JPEG, within a
   byte budget and a time budget; past either, the rest are placeholders, counted.
   `render_html(report)` then turns the data into the HTML string (pure; every piece of
   untrusted text, i.e. OCR answers, file names, error messages, queries, goes through
   `html.escape`, and the markdown renderer escapes before it formats).

The report's size is bounded by `ReportLimits`, whatever the run's size: the thumbnail byte
budget, plus per shown page its answer (twice: rendered and raw) and text layer, each cut to
`max_text_chars`, plus the suspect tables (`max_rows` each) and the video timelines (videos x
query timelines x spans, descriptions cut to 300 characters).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import posixpath
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlbeam.schemas import TABLES
from vlbeam.transforms.media.files import read_uri

logger = logging.getLogger(__name__)

STAGES = ("ingest", "sniff", "task", "split", "render", "decode", "inference", "parse")
PAGE_KINDS = ("pdf", "image")
# columns read up front; the rest (answers, text layers) only for the pages shown
HEAVY = {
    "pages": {"text", "text_layer", "reasoning"},
    "video_windows": {"raw_output", "reasoning", "frame_times_s"},
}
QUALITY_FLAGS = "quality_flags"
MAX_DESCRIPTION_CHARS = 300  # per span
MAX_WINDOWS_DRAWN = 200  # per timeline; past it only failed and missing windows are drawn
DASH = "\u2013"  # en dash: missing values, time ranges


@dataclass(frozen=True)
class ReportLimits:
    """What bounds the report's size (and the time spent on thumbnails)."""

    max_documents: int = 50  # PDFs/images shown page by page
    max_pages_per_document: int = 12
    max_videos: int = 20
    max_timelines_per_video: int = 10  # one per query
    max_spans_per_timeline: int = 100
    max_span_thumbnails: int = 12  # per timeline
    max_rows: int = 200  # per suspect table
    max_text_chars: int = 6000  # per OCR answer / text layer / message
    thumbnails: bool = True
    thumb_long_side: int = 320
    max_thumbnails: int = 600
    max_thumbnail_bytes: int = 12_000_000
    thumbnail_time_s: float = 600.0  # for all thumbnails together
    thumb_timeout_s: float = 30.0  # per page / frame, in the helper process

    def __post_init__(self) -> None:
        if min(self.max_documents, self.max_pages_per_document, self.max_videos) < 0:
            raise ValueError("limits must be >= 0")
        if not 64 <= self.thumb_long_side <= 2048:
            raise ValueError("thumbnail long side must be within 64..2048 px")


# ------------------------------------------------------------------------------ reading


def _join(*parts: str) -> str:
    if "://" in parts[0]:
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.join(*parts)
    return posixpath.join(*parts)


def _match(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # a missing folder matches nothing
        return []


def _parquet(path: str) -> pq.ParquetFile:
    if "://" not in path:
        return pq.ParquetFile(path)
    from apache_beam.io.filesystems import FileSystems

    return pq.ParquetFile(FileSystems.open(path, compression_type="uncompressed"))


def list_runs(output: str) -> tuple[dict[str, dict | None], set[str]]:
    """Every run of an output folder (a table partition or a manifest) with its manifest, and
    the runs that have tables (a failed run has a manifest only)."""
    runs: dict[str, dict | None] = {}
    published: set[str] = set()
    for table in TABLES:
        for path in _match(_join(output, table, "run=*", "*.parquet")):
            run_id = path.rsplit("/", 2)[-2][len("run=") :]
            runs.setdefault(run_id, None)
            published.add(run_id)
    for path in _match(_join(output, "_runs", "*.json")):
        run_id = posixpath.basename(path)[: -len(".json")]
        try:
            runs[run_id] = json.loads(read_uri(path))
        except (OSError, ValueError) as exc:
            logger.warning("unreadable manifest %s: %s", path, exc)
            runs.setdefault(run_id, None)
    return runs, published


def choose_run(runs: dict[str, dict | None], published: set[str], run_id: str | None = None) -> str:
    """`run_id` if the folder has it; else, of the runs with tables (if none has any: of all
    runs), the one that started last by its manifest (without one: by its id, which starts
    with the UTC start time)."""
    if not runs:
        raise ValueError("no vlbeam run found (no DIR/<table>/run=*/ partition, no DIR/_runs/)")
    if run_id is not None:
        if run_id not in runs:
            raise ValueError(f"no run {run_id!r}; runs here: {', '.join(sorted(runs))}")
        return run_id

    def started(rid: str) -> tuple[str, str]:
        manifest = runs[rid] or {}
        return (str(manifest.get("started_at") or rid), rid)

    return max(published or runs, key=started)


@dataclass
class RunData:
    """One run's tables (light columns) and manifest."""

    output: str
    run_id: str
    manifest: dict | None
    tables: dict[str, pa.Table]
    files: dict[str, list[str]]  # table -> its Parquet files, to read heavy columns later


def _read_table(files: list[str], schema: pa.Schema, skip: set[str]) -> pa.Table:
    parts = []
    for path in files:
        handle = _parquet(path)
        names = [n for n in handle.schema_arrow.names if n not in skip]
        parts.append(handle.read(columns=names))
    if not parts:
        return pa.schema([f for f in schema if f.name not in skip]).empty_table()
    return pa.concat_tables(parts, promote_options="permissive")


def load_run(output: str, run_id: str | None = None) -> RunData:
    output = output.rstrip("/") if len(output) > 1 else output
    runs, published = list_runs(output)
    run_id = choose_run(runs, published, run_id)
    tables, files = {}, {}
    for table, schema in TABLES.items():
        files[table] = [p for p in _match(_join(output, table, f"run={run_id}", "*.parquet"))]
        tables[table] = _read_table(files[table], schema, HEAVY.get(table, set()))
    return RunData(output, run_id, runs[run_id], tables, files)


def read_rows(run: RunData, table: str, doc_ids: set[str]) -> list[dict]:
    """All columns of a table's rows for these documents (streamed in batches)."""
    rows: list[dict] = []
    if not doc_ids:
        return rows
    wanted = pa.array(sorted(doc_ids), pa.string())
    for path in run.files.get(table, []):
        for batch in _parquet(path).iter_batches(batch_size=2048):
            mask = pc.is_in(batch.column("doc_id"), value_set=wanted)
            rows += batch.filter(mask).to_pylist()
    return rows


# ------------------------------------------------------------------------------ collecting


@dataclass
class Report:
    run_id: str
    manifest: dict | None
    limits: ReportLimits
    summary: dict
    failures: list[dict]
    failures_total: int
    truncated: list[dict]
    truncated_total: int
    flagged: list[dict]
    flagged_total: int
    has_quality_flags: bool
    not_ok: list[dict]
    not_ok_total: int
    documents: list[dict]
    documents_total: int
    videos: list[dict]
    videos_total: int
    thumbs: dict[tuple, dict] = field(default_factory=dict)
    thumb_stats: dict = field(default_factory=dict)
    generated_at: str = ""


def quality_flags(value) -> list[str]:
    """A `quality_flags` cell as a list of flag names, whatever shape the column has (list of
    strings, a JSON list, a comma-separated string, a struct/map of booleans)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return quality_flags(json.loads(text))
            except ValueError:
                pass
        return [p.strip() for p in re.split(r"[,;]", text) if p.strip()]
    if isinstance(value, dict):
        return [str(k) for k, v in value.items() if v]
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # a map
            return [str(k) for k, v in value if v]
        return [str(v) for v in value if v not in (None, "", False)]
    return [str(value)] if value else []


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


def _distinct(*columns) -> list[str]:
    found: dict[str, None] = {}
    for column in columns:
        for value in pc.unique(column).to_pylist():
            if value:
                found[str(value)] = None
    return list(found)


def _window_plan(manifest: dict | None, duration_s: float | None) -> list[tuple[float, float]]:
    """The windows the job planned for a video of this duration (same arithmetic as the job)."""
    if not duration_s or duration_s <= 0:
        return []
    from vlbeam.schemas.elements import SourceFile
    from vlbeam.transforms.split_video import VideoConfig, plan_windows

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


def _clip(text: str | None, limit: int) -> tuple[str | None, int]:
    """(text cut to `limit` characters, how many were cut)."""
    if text is None or len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def _stage_order(row: dict) -> tuple:
    stage = row.get("stage")
    rank = STAGES.index(stage) if stage in STAGES else len(STAGES)
    unit = row.get("unit")
    return (rank, row.get("source_uri") or "", -1 if unit is None else unit)


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


def _flagged_pages(pages: pa.Table) -> list[dict]:
    """(doc_id, source_uri, page_number, flags) of every page with a quality flag."""
    if QUALITY_FLAGS not in pages.column_names or pages.num_rows == 0:
        return []
    column = pages.column(QUALITY_FLAGS)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        pages = pages.filter(pc.fill_null(pc.greater(pc.list_value_length(column), 0), False))
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        pages = pages.filter(pc.fill_null(pc.greater(pc.utf8_length(column), 0), False))
    found = []
    keep = ["doc_id", "source_uri", "page_number", QUALITY_FLAGS]
    for row in pages.select(keep).to_pylist():
        flags = quality_flags(row.pop(QUALITY_FLAGS))
        if flags:
            found.append({**row, "flags": flags})
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
    flags_of = {(r["doc_id"], r["page_number"]): r["flags"] for r in flagged}

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
    summary = {
        "documents": docs.num_rows,
        "documents_by_status": _count(docs, "status"),
        "documents_by_kind": _count(docs, "kind"),
        "pages_expected": int(_sum(docs.filter(page_kinds), "num_pages") or 0),
        "pages_ok": pages.num_rows,
        "pages_failed": distinct_units(page_failures),
        "pages_truncated": truncated_pages.num_rows,
        "pages_flagged": len(flagged) if has_flags else None,
        "videos": len(video_ids),
        "windows_answered": windows.num_rows,
        "windows_failed": distinct_units(window_failures),
        "windows_truncated": truncated_windows.num_rows,
        "events": events.num_rows,
        "failures": failures.num_rows,
        "failures_by_stage_type": sorted(
            ((r["stage"], r["error_type"], r["stage_count"]) for r in by_stage_type),
            key=lambda x: (STAGES.index(x[0]) if x[0] in STAGES else 99, -x[2], x[1]),
        ),
        "input_tokens": int(tokens_in),
        "output_tokens": int(tokens_out),
        "cost_usd": sum(costs) if costs else None,
        "wall_s": wall_s,
        "pages_per_s": (pages.num_rows / wall_s) if wall_s else None,
        "models": _distinct(docs.column("model"), pages.column("model"), windows.column("model")),
        "backends": _distinct(docs.column("backend"), pages.column("backend")),
        "prompt_ids": _distinct(
            docs.column("prompt_id"), pages.column("prompt_id"), windows.column("prompt_id")
        ),
        "served_models": _distinct(
            *(
                tb.column("served_model")
                for tb in (pages, windows)
                if "served_model" in tb.column_names
            )
        ),
        "providers": _distinct(
            *(tb.column("provider") for tb in (pages, windows) if "provider" in tb.column_names)
        ),
        "max_new_tokens": (manifest.get("options") or {}).get("max_new_tokens"),
    }

    # suspect tables, each cut to max_rows
    stage_rank = pc.fill_null(
        pc.index_in(failures.column("stage"), value_set=pa.array(STAGES)), len(STAGES)
    )
    fail_view = []
    for row in _rows(
        failures.append_column("_rank", stage_rank),
        sort=[("_rank", "ascending"), ("source_uri", "ascending"), ("unit", "ascending")],
        limit=limits.max_rows,
    ):
        row.pop("_rank")
        row["message"], row["message_cut"] = _clip(row["message"], limits.max_text_chars)
        fail_view.append(row)
    by_place = [("source_uri", "ascending")]
    truncated = [
        {**r, "kind": "page"}
        for r in _rows(
            truncated_pages, sort=[*by_place, ("page_number", "ascending")], limit=limits.max_rows
        )
    ] + [
        {**r, "kind": "window"}
        for r in _rows(
            truncated_windows,
            sort=[*by_place, ("window_index", "ascending")],
            limit=limits.max_rows,
        )
    ]
    truncated.sort(key=lambda r: (r["source_uri"], r.get("page_number") or r.get("window_index")))
    flagged.sort(key=lambda r: (r["source_uri"], r["page_number"]))
    not_ok_docs = docs.filter(_isin(docs, "status", ("partial", "failed")))
    not_ok = _rows(
        not_ok_docs.append_column("_failed", _eq(not_ok_docs, "status", "failed")),
        sort=[("_failed", "ascending"), ("source_uri", "ascending")],
        limit=limits.max_rows,
    )

    # documents: suspects first
    suspects = (
        set(truncated_pages.column("doc_id").to_pylist())
        | set(truncated_windows.column("doc_id").to_pylist())
        | {r["doc_id"] for r in flagged}
        | set(unit_failures.column("doc_id").to_pylist())
    )
    page_docs = docs.filter(
        pc.and_(
            pc.and_(page_kinds, pc.is_valid(docs.column("doc_id"))),
            pc.invert(_eq(docs, "status", "skipped")),
        )
    )
    shown_docs = _rows(_ranked(page_docs, suspects), limit=limits.max_documents)
    shown_ids = {d["doc_id"] for d in shown_docs}
    page_rows: dict[str, dict[int, dict]] = {}
    for row in _rows(pages, _isin(pages, "doc_id", shown_ids)):
        row.pop(QUALITY_FLAGS, None)
        page_rows.setdefault(row["doc_id"], {})[row["page_number"]] = row
    shown_failures = _rows(failures, _isin(failures, "doc_id", shown_ids))
    doc_views = []
    wanted_pages: dict[str, set[int]] = {}
    for doc in shown_docs:
        did = doc["doc_id"]
        rows = page_rows.get(did, {})
        unit_fails: dict[int, list[dict]] = {}
        for f in shown_failures:
            if f["doc_id"] == did and f["unit"] is not None:
                unit_fails.setdefault(f["unit"], []).append(f)
        numbers = sorted(set(rows) | set(unit_fails))
        suspect = [
            n
            for n in numbers
            if n in unit_fails
            or (did, n) in flags_of
            or (rows.get(n) or {}).get("finish_reason") == "length"
        ]
        chosen = suspect[: limits.max_pages_per_document]
        chosen += [n for n in numbers if n not in set(chosen)][
            : limits.max_pages_per_document - len(chosen)
        ]
        chosen.sort()
        wanted_pages[did] = set(chosen)
        page_views = []
        for n in chosen:
            row = rows.get(n)
            page_views.append(
                {
                    "page_number": n,
                    "row": row,
                    "flags": flags_of.get((did, n), []),
                    "failures": unit_fails.get(n, []),
                    "truncated": bool(row) and row.get("finish_reason") == "length",
                }
            )
        doc_views.append(
            {
                "doc": {k: v for k, v in doc.items() if k != "_rank"},
                "pages": page_views,
                "pages_total": len(numbers),
                "pages_omitted": len(numbers) - len(chosen),
                "failures": [f for f in shown_failures if f["doc_id"] == did and f["unit"] is None],
            }
        )
    # the chosen pages' text, read now
    texts: dict[tuple[str, int], dict] = {}
    for row in read_rows(run, "pages", set(wanted_pages)):
        if row["page_number"] in wanted_pages.get(row["doc_id"], ()):
            texts[(row["doc_id"], row["page_number"])] = row
    for view in doc_views:
        did = view["doc"]["doc_id"]
        for page in view["pages"]:
            full = texts.get((did, page["page_number"]))
            text, text_cut = _clip(full.get("text") if full else None, limits.max_text_chars)
            layer, layer_cut = _clip(
                full.get("text_layer") if full else None, limits.max_text_chars
            )
            page.update(text=text, text_cut=text_cut, text_layer=layer, text_layer_cut=layer_cut)

    # videos: suspects first
    video_docs = docs.filter(
        pc.and_(_eq(docs, "kind", "video"), pc.invert(_eq(docs, "status", "skipped")))
    )
    shown_videos = _rows(_ranked(video_docs, suspects), limit=limits.max_videos)
    video_shown_ids = {d["doc_id"] for d in shown_videos}
    win_rows: dict[str, list[dict]] = {}
    for row in _rows(windows, _isin(windows, "doc_id", video_shown_ids)):
        win_rows.setdefault(row["doc_id"], []).append(row)
    event_rows: dict[str, list[dict]] = {}
    for row in _rows(events, _isin(events, "doc_id", video_shown_ids)):
        event_rows.setdefault(row["doc_id"], []).append(row)
    video_failures: dict[str, list[dict]] = {}
    for row in _rows(failures, _isin(failures, "doc_id", video_shown_ids)):
        video_failures.setdefault(row["doc_id"], []).append(row)
    queries = list(dict.fromkeys((manifest.get("options") or {}).get("query") or []))
    video_views = [
        _video_view(
            {k: v for k, v in doc.items() if k != "_rank"},
            win_rows.get(doc["doc_id"], []),
            event_rows.get(doc["doc_id"], []),
            video_failures.get(doc["doc_id"], []),
            queries,
            manifest,
            limits,
        )
        for doc in shown_videos
    ]

    return Report(
        run_id=run.run_id,
        manifest=run.manifest,
        limits=limits,
        summary=summary,
        failures=fail_view,
        failures_total=failures.num_rows,
        truncated=truncated[: limits.max_rows],
        truncated_total=truncated_pages.num_rows + truncated_windows.num_rows,
        flagged=flagged[: limits.max_rows],
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


def _lanes(spans: list[dict]) -> int:
    """Greedy lane assignment so overlapping spans don't cover each other; returns lanes."""
    ends: list[float] = []
    for span in spans:
        for lane, end in enumerate(ends):
            if span["start_s"] >= end:
                ends[lane] = span["end_s"]
                span["lane"] = lane
                break
        else:
            if len(ends) < 8:
                ends.append(span["end_s"])
                span["lane"] = len(ends) - 1
            else:  # too crowded: the lane that frees first
                lane = min(range(len(ends)), key=ends.__getitem__)
                ends[lane] = max(ends[lane], span["end_s"])
                span["lane"] = lane
    return max(1, len(ends))


def _video_view(doc, win_rows, event_rows, failure_rows, queries, manifest, limits):
    answered = {w["window_index"]: w for w in win_rows}
    failed: dict[int, list[dict]] = {}
    for row in failure_rows:
        if row["unit"] is not None:
            failed.setdefault(row["unit"], []).append(row)
    doc_failures = [row for row in failure_rows if row["unit"] is None]
    duration = doc.get("duration_s") or max(
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
    window_views, unplaced = [], []
    for i in indexes:
        if i in answered:
            start, end = answered[i]["start_s"], answered[i]["end_s"]
        elif i < len(plan):
            start, end = plan[i]
        else:
            start = end = None
        state = "failed" if i in failed else ("ok" if i in answered else "missing")
        view = {
            "index": i,
            "start_s": start,
            "end_s": end,
            "state": state,
            "failures": failed.get(i, []),
            "row": answered.get(i),
        }
        (window_views if start is not None else unplaced).append(view)
    names: list[str | None] = list(queries)
    for row in event_rows:
        if row["query"] not in names:
            names.append(row["query"])
    if not names:
        names = [None]
    timelines = []
    for query in names[: limits.max_timelines_per_video]:
        spans = sorted(
            (dict(e) for e in event_rows if e["query"] == query),
            key=lambda e: (e["start_s"], e["end_s"]),
        )
        shown = spans[: limits.max_spans_per_timeline]
        for span in shown:
            span["description"], span["description_cut"] = _clip(
                span.get("description"), min(limits.max_text_chars, MAX_DESCRIPTION_CHARS)
            )
        lanes = _lanes(shown)
        timelines.append(
            {"query": query, "spans": shown, "lanes": lanes, "spans_total": len(spans)}
        )
    return {
        "doc": doc,
        "duration_s": duration,
        "windows": window_views,
        "unplaced_windows": unplaced,
        "timelines": timelines,
        "timelines_total": len(names),
        "failures": doc_failures,
    }


# ------------------------------------------------------------------------------ thumbnails


def resolve_source(uri: str, source_root: str | None = None) -> str | None:
    """Where the file named by a `source_uri` is now: remote URIs as they are, a relative
    path against `source_root` first (when given), then against the current folder."""
    if "://" in uri:
        from apache_beam.io.filesystems import FileSystems

        return uri if FileSystems.exists(uri) else None
    path = Path(uri)
    candidates = [path] if path.is_absolute() else []
    if not path.is_absolute():
        if source_root:
            candidates.append(Path(source_root) / path)
        candidates.append(path)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    return None


def _size(path: str) -> int | None:
    try:
        if "://" in path:
            from apache_beam.io.filesystems import FileSystems

            return FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        return Path(path).stat().st_size
    except Exception:
        return None


def _jpeg(data: bytes, long_side: int, quality: int = 70) -> bytes:
    """Re-encode an image from the helper process as a small JPEG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((long_side, long_side))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality, optimize=True)
        return buf.getvalue()


class Thumbnailer:
    """Makes thumbnails in vlbeam's helper process, within a byte, count and time budget."""

    def __init__(self, limits: ReportLimits, source_root: str | None = None) -> None:
        from vlbeam.transforms.media.helper_process import HelperProcess

        self.limits = limits
        self.source_root = source_root
        self.helper = HelperProcess(max_memory_mb=2048)
        self.deadline = time.monotonic() + limits.thumbnail_time_s
        self.stats = {"made": 0, "bytes": 0, "left_out": 0, "unavailable": 0}

    def close(self) -> None:
        self.helper.close()

    def _budget_left(self) -> str | None:
        if self.stats["made"] >= self.limits.max_thumbnails:
            return f"left out: the report holds at most {self.limits.max_thumbnails} thumbnails"
        if self.stats["bytes"] >= self.limits.max_thumbnail_bytes:
            mb = self.limits.max_thumbnail_bytes / 1e6
            return f"left out: the thumbnail budget ({mb:g} MB) is spent"
        if time.monotonic() > self.deadline:
            budget = self.limits.thumbnail_time_s
            return f"left out: the thumbnail time budget ({budget:g} s) ran out"
        return None

    def _keep(self, image: bytes) -> dict:
        data = _jpeg(image, self.limits.thumb_long_side)
        self.stats["made"] += 1
        self.stats["bytes"] += len(data)
        return {"src": "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")}

    def _unavailable(self, note: str) -> dict:
        self.stats["unavailable"] += 1
        return {"note": note}

    def _left_out(self, note: str) -> dict:
        self.stats["left_out"] += 1
        return {"note": note}

    def pages(self, doc: dict, page_numbers: list[int]) -> dict[int, dict]:
        from vlbeam.schemas.config import RenderConfig

        found: dict[int, dict] = {}
        if not page_numbers:
            return found
        note = self._budget_left()
        if note:
            return {n: self._left_out(note) for n in page_numbers}
        path = resolve_source(doc["source_uri"], self.source_root)
        if path is None:
            return {
                n: self._unavailable("no thumbnail: source file not found") for n in page_numbers
            }
        try:
            data = read_uri(path)
        except OSError as exc:
            return {
                n: self._unavailable(f"no thumbnail: cannot read source ({exc})")
                for n in page_numbers
            }
        if hashlib.sha256(data).hexdigest() != doc["doc_id"]:
            return {
                n: self._unavailable(
                    "no thumbnail: the source changed since the run (its SHA-256 is not the doc_id)"
                )
                for n in page_numbers
            }
        side = self.limits.thumb_long_side
        cfg = RenderConfig(
            target_long_side=side,
            max_pixels=side * side,
            min_short_side=4,
            image_format="jpeg",
            extract_text_layer=False,
            timeout_s=self.limits.thumb_timeout_s,
        )
        for n in page_numbers:
            note = self._budget_left()
            if note:
                found[n] = self._left_out(note)
                continue
            try:
                page = self.helper.render(doc["doc_id"], data, doc["kind"], n, cfg)
                found[n] = self._keep(page.image)
            except Exception as exc:  # a thumbnail that can't be made is a note, not an error
                found[n] = self._unavailable(f"no thumbnail: {type(exc).__name__}: {exc}")
        return found

    def frames(self, doc: dict, times: list[float], duration_s: float) -> dict[float, dict]:
        from vlbeam.transforms.media.video_decode import SamplingConfig

        found: dict[float, dict] = {}
        if not times:
            return found
        note = self._budget_left()
        if note:
            return {t: self._left_out(note) for t in times}
        path = resolve_source(doc["source_uri"], self.source_root)
        if path is None:
            return {t: self._unavailable("no thumbnail: source file not found") for t in times}
        if doc.get("size_bytes") is not None and _size(path) != doc["size_bytes"]:
            return {
                t: self._unavailable(
                    "no thumbnail: the source changed since the run (its size differs)"
                )
                for t in times
            }
        side = self.limits.thumb_long_side * 3 // 4
        cfg = SamplingConfig(
            fps=4.0, max_frames=2, max_pixels=side * side * 9 // 16, jpeg_quality=90
        )
        for t in times:
            note = self._budget_left()
            if note:
                found[t] = self._left_out(note)
                continue
            start = max(0.0, min(t, duration_s - 0.5)) if duration_s else max(0.0, t)
            end = start + 1.0 if not duration_s else min(start + 1.0, duration_s)
            try:
                frames, _errors = self.helper.sample_video(
                    path, start, end, cfg, self.limits.thumb_timeout_s
                )
            except Exception as exc:
                found[t] = self._unavailable(f"no thumbnail: {type(exc).__name__}: {exc}")
                continue
            if not frames:
                found[t] = self._unavailable(f"no thumbnail: no frame decodes at {t:.1f} s")
                continue
            found[t] = {**self._keep(frames[0].image), "time_s": frames[0].time_s}
        return found


def add_thumbnails(report: Report, source_root: str | None = None) -> Report:
    """Thumbnails for the shown pages and for each shown span's start, in report order
    (suspects first, so a spent budget leaves out the least interesting ones)."""
    limits = report.limits
    if not limits.thumbnails:
        report.thumb_stats = {"disabled": True}
        return report
    maker = Thumbnailer(limits, source_root)
    try:
        for view in report.documents:
            doc = view["doc"]
            numbers = [p["page_number"] for p in view["pages"]]
            for n, thumb in maker.pages(doc, numbers).items():
                report.thumbs[("page", doc["doc_id"], n)] = thumb
        for view in report.videos:
            doc = view["doc"]
            times: list[float] = []
            for timeline in view["timelines"]:
                for span in timeline["spans"][: limits.max_span_thumbnails]:
                    times.append(round(span["start_s"], 3))
            times = sorted(set(times))
            for t, thumb in maker.frames(doc, times, view["duration_s"]).items():
                report.thumbs[("frame", doc["doc_id"], t)] = thumb
    finally:
        maker.close()
    report.thumb_stats = dict(maker.stats)
    return report


# ------------------------------------------------------------------------------ markdown

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_ORDERED = re.compile(r"^(\s*)\d{1,9}[.)]\s+(.*)$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
# Inline patterns bound how far they look from each start, so hostile text stays linear.
_CODE = re.compile(r"`([^`\n]{1,500})`")
_IMAGE = re.compile(r"!\[([^\]\n]{0,300})\]\(([^)\n]{0,500})\)")
_LINK = re.compile(r"\[([^\]\n]{1,300})\]\(([^)\n]{0,500})\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.{1,300}?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![\w*])([*_])(?=\S)([^*_\n]{1,300}?)(?<=\S)\1(?![\w*])")
MAX_QUOTE_DEPTH = 4


def _inline(text: str) -> str:
    """Escape, then format: code spans, images and links (as text: a report must not
    link out), bold, italic. Formatting only ever wraps already-escaped text in fixed tags."""
    codes: list[str] = []

    def keep_code(m: re.Match) -> str:
        codes.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    out = html.escape(text.replace("\x00", ""), quote=True)
    out = _CODE.sub(keep_code, out)
    out = _IMAGE.sub(lambda m: f'<span class="md-img">[image: {m.group(1)}]</span>', out)
    out = _LINK.sub(
        lambda m: f'<span class="md-link" title="{m.group(2)}">{m.group(1)}</span>', out
    )
    out = _BOLD.sub(r"<strong>\2</strong>", out)
    out = _ITALIC.sub(r"<em>\2</em>", out)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def render_markdown(text: str | None, _depth: int = 0) -> str:
    """A safe subset of markdown (what OCR answers use: headings, paragraphs, lists, pipe
    tables, code, quotes, rules) to HTML. Raw HTML in the text stays visible text."""
    if not text:
        return ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + "<br>".join(_inline(p) for p in para) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
            i += 1
        elif _FENCE.match(line):
            flush()
            fence = _FENCE.match(line).group(1)
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i])
                i += 1
            i += 1
            out.append("<pre><code>" + html.escape("\n".join(body)) + "</code></pre>")
        elif _HEADING.match(line):
            flush()
            m = _HEADING.match(line)
            level = len(m.group(1))
            out.append(f'<div class="md-h md-h{level}">{_inline(m.group(2))}</div>')
            i += 1
        elif _RULE.match(line):
            flush()
            out.append("<hr>")
            i += 1
        elif (
            line.lstrip().startswith("|") and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1])
        ):
            flush()
            head = _cells(line)
            i += 2
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            cells = "".join(f"<th>{_inline(c)}</th>" for c in head)
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows
            )
            out.append(
                f'<table class="md-table"><thead><tr>{cells}</tr></thead>'
                f"<tbody>{body}</tbody></table>"
            )
        elif _BULLET.match(line) or _ORDERED.match(line):
            flush()
            ordered = bool(_ORDERED.match(line)) and not _BULLET.match(line)
            pattern = _ORDERED if ordered else _BULLET
            items = []
            while i < len(lines) and pattern.match(lines[i]):
                m = pattern.match(lines[i])
                depth = min(len(m.group(1).expandtabs(4)) // 2, 6)
                items.append(f'<li class="md-d{depth}">{_inline(m.group(2))}</li>')
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>{''.join(items)}</{tag}>")
        elif line.lstrip().startswith(">") and _depth < MAX_QUOTE_DEPTH:
            flush()
            quoted = []
            while i < len(lines) and lines[i].lstrip().startswith(">"):
                quoted.append(lines[i].lstrip()[1:].lstrip())
                i += 1
            out.append(
                f"<blockquote>{render_markdown(chr(10).join(quoted), _depth + 1)}</blockquote>"
            )
        else:
            para.append(line.strip())
            i += 1
    flush()
    return "".join(out)


# ------------------------------------------------------------------------------ HTML

CSS = """
:root{--fg:#1d2330;--muted:#5f6b7a;--line:#dde2e8;--bg:#f6f7f9;--card:#fff;--bad:#c62828;
--warn:#b26a00;--ok:#2e7d32;--accent:#2957a4;--span:#2f6fd6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px;font-weight:600}
header .sub{color:#c3cad4;font-size:13px;margin-top:2px}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);
padding:8px 24px;display:flex;gap:18px;flex-wrap:wrap}
nav a{color:var(--accent);text-decoration:none;font-weight:500}
main{padding:8px 24px 40px;max-width:1500px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:2px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:18px 0 8px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.03em}
.card .value{font-size:24px;font-weight:600;margin-top:2px}
.card .detail{color:var(--muted);font-size:12px}
.card.bad .value{color:var(--bad)}.card.warn .value{color:var(--warn)}
table{border-collapse:collapse;background:var(--card);width:100%}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.msg{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:12px;max-height:16em;overflow:auto}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;background:var(--card);
border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.kv dt{color:var(--muted)}.kv dd{margin:0;word-break:break-word}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;
background:#e8ebef;color:var(--fg);margin-right:4px}
.badge.ok{background:#e3f2e5;color:var(--ok)}.badge.partial,.badge.length,.badge.flag{
background:#fff1dc;color:var(--warn)}.badge.failed,.badge.error{background:#fde6e6;color:var(--bad)}
.note{color:var(--muted);font-style:italic}
.omitted{color:var(--warn);font-weight:500;margin:6px 0}
.filter{margin:4px 0 8px;padding:4px 8px;border:1px solid var(--line);border-radius:6px;width:320px}
article{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;
margin:12px 0}
article.suspect{border-left:4px solid var(--warn)}article.failed{border-left:4px solid var(--bad)}
article h3{margin:2px 0 4px;word-break:break-all}
.meta{color:var(--muted);font-size:12px}
.page{display:grid;grid-template-columns:220px 1fr 1fr;gap:12px;border-top:1px solid var(--line);
padding:10px 0}
.page.suspect{background:#fffaf2}.page.failed{background:#fff6f6}
.page h4{margin:0 0 4px;font-size:13px}
.thumb{max-width:100%;border:1px solid var(--line);background:#fafafa;display:block}
.nothumb{border:1px dashed var(--line);padding:14px 8px;color:var(--muted);font-size:12px;
min-height:60px;word-break:break-word}
.ocr,.layer{max-height:420px;overflow:auto;border:1px solid var(--line);border-radius:6px;
padding:6px 10px;background:#fcfcfd}
.layer{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.col-title{font-size:12px;color:var(--muted);margin-bottom:3px;text-transform:uppercase}
.ocr p{margin:4px 0}.ocr .md-h{font-weight:700;margin:8px 0 4px}.ocr .md-h1{font-size:17px}
.ocr .md-h2{font-size:15px}.ocr code{background:#eef1f5;padding:0 3px;border-radius:3px}
.ocr table{width:auto;margin:6px 0}.ocr .md-link{text-decoration:underline dotted}
.ocr li.md-d1{margin-left:16px}.ocr li.md-d2{margin-left:32px}.ocr li.md-d3{margin-left:48px}
details>summary{cursor:pointer;color:var(--accent);font-size:12px}
.timeline{margin:10px 0 18px}
.tl-title{font-weight:600;margin-bottom:4px}
.tl{position:relative;margin-left:90px;border-left:1px solid var(--line);
border-right:1px solid var(--line)}
.tl-row{position:relative;border-bottom:1px dotted var(--line)}
.tl-row .rl{position:absolute;left:-90px;width:84px;text-align:right;font-size:11px;
color:var(--muted);top:2px}
.track{position:relative;height:100%}
.win{position:absolute;height:14px;border-radius:3px;background:#cfd6df;border:1px solid #aab4c0;
font-size:10px;line-height:12px;overflow:hidden;color:#3b4450;padding-left:3px}
.win.failed{background:#f7c5c5;border-color:var(--bad);color:var(--bad);font-weight:700}
.win.missing{background:none;border-style:dashed}
.span{position:absolute;height:18px;border-radius:3px;background:var(--span);opacity:.9;
min-width:2px}
.span:hover{outline:2px solid #0b2e6b}
.axis{position:relative;height:18px}
.rl-note{position:absolute;right:4px;top:20px;font-size:10px;color:var(--muted)}
.tick{position:absolute;top:0;font-size:10px;color:var(--muted);transform:translateX(-50%)}
.tick::before{content:"";position:absolute;left:50%;top:-4px;height:4px;border-left:1px solid #999}
.spans{display:flex;flex-wrap:wrap;gap:10px;margin-top:8px}
.spancard{width:190px;border:1px solid var(--line);border-radius:6px;padding:5px;font-size:12px;
background:#fcfcfd}
.spancard .when{font-weight:600;font-variant-numeric:tabular-nums}
footer{color:var(--muted);font-size:12px;padding:10px 24px 30px}
@media (max-width:900px){.page{grid-template-columns:1fr}}
"""

# Filter boxes over tables, and a "suspects only" switch for documents. Nothing else runs.
SCRIPT = """
(function(){
  document.querySelectorAll('input[data-filter]').forEach(function(box){
    box.addEventListener('input', function(){
      var q = box.value.toLowerCase();
      var rows = document.querySelectorAll(box.getAttribute('data-filter'));
      var shown = 0;
      rows.forEach(function(row){
        var hit = !q || row.textContent.toLowerCase().indexOf(q) >= 0;
        row.hidden = !hit; if (hit) shown++;
      });
      var out = document.getElementById(box.getAttribute('data-count'));
      if (out) out.textContent = shown + ' shown';
    });
  });
  var only = document.getElementById('suspects-only');
  if (only) only.addEventListener('change', function(){
    document.querySelectorAll('article.doc').forEach(function(a){
      a.hidden = only.checked && !a.classList.contains('suspect');
    });
  });
  document.documentElement.setAttribute('data-script', 'ran');
})();
"""


def _e(value) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    if value is None:
        return ""
    return html.escape(str(value).replace("\x00", ""), quote=True)


def _int(value) -> str:
    return DASH if value is None else f"{int(value):,}"


def _n(count, noun: str) -> str:
    """`3 pages`, `1 page`; an unknown count is a dash."""
    if count is None:
        return f"{DASH} {noun}s"
    return f"{int(count):,} {noun}" + ("" if count == 1 else "s")


def _secs(value: float | None) -> str:
    if value is None:
        return DASH
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(value, 60)
    if minutes < 60:
        return f"{int(minutes)} min {seconds:02.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def _clock(value: float, decimals: int = 1) -> str:
    """Seconds as m:ss.s (or h:mm:ss.s)."""
    tenths = round(max(0.0, float(value)) * 10**decimals)
    whole, frac = divmod(tenths, 10**decimals)
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    if hours:
        text = f"{hours}:{text}"
    return text + (f".{frac:0{decimals}d}" if decimals else "")


def _span_text(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return DASH
    return f"{_clock(start)} {DASH} {_clock(end)}"


def _anchor(prefix: str, doc_id: str | None, unit=None) -> str:
    base = re.sub(r"[^0-9a-zA-Z]", "", doc_id or "")[:16] or "none"
    return f"{prefix}-{base}" + ("" if unit is None else f"-{int(unit)}")


def _badge(text, kind: str = "") -> str:
    return f'<span class="badge {_e(kind)}">{_e(text)}</span>'


def _card(metric: str, label: str, value: str, detail: str = "", tone: str = "") -> str:
    return (
        f'<div class="card {tone}" data-metric="{_e(metric)}"><div class="label">{_e(label)}'
        f'</div><div class="value">{_e(value)}</div><div class="detail">{_e(detail)}</div></div>'
    )


def _omitted(shown: int, total: int, what: str) -> str:
    if total <= shown:
        return ""
    return (
        f'<p class="omitted" data-omitted="{total - shown}">{total - shown:,} more {_e(what)} '
        f"not shown (showing {shown:,} of {total:,}).</p>"
    )


def _cut_note(cut: int) -> str:
    return f'<div class="omitted">… {cut:,} more characters not shown</div>' if cut else ""


def _summary_html(report: Report) -> str:
    s, m = report.summary, report.manifest or {}
    status = s["documents_by_status"]
    status_text = " · ".join(f"{n} {k}" for k, n in sorted(status.items()))
    pages_detail = f"of {_int(s['pages_expected'])} pages"
    if s["pages_failed"]:
        pages_detail += f"; {s['pages_failed']:,} failed"
    cost = s["cost_usd"]
    cost_text = DASH if cost is None else f"${cost:,.4f}"
    cost_detail = ""
    if cost and s["pages_ok"]:
        cost_detail = f"${cost / s['pages_ok'] * 1000:,.4f} per 1,000 pages"
    cards = [
        _card(
            "documents",
            "documents",
            _int(s["documents"]),
            status_text,
            "bad" if status.get("failed") else ("warn" if status.get("partial") else ""),
        ),
        _card(
            "pages",
            "pages OCR'd",
            _int(s["pages_ok"]),
            pages_detail,
            "bad" if s["pages_failed"] else "",
        ),
        _card(
            "truncated",
            "hit --max-new-tokens",
            _int(s["pages_truncated"]),
            f"pages (max {s['max_new_tokens']})" if s["max_new_tokens"] else "pages",
            "warn" if s["pages_truncated"] else "",
        ),
        _card(
            "flagged",
            "quality flags",
            DASH if s["pages_flagged"] is None else _int(s["pages_flagged"]),
            "pages" if s["pages_flagged"] is not None else "no quality_flags column",
            "warn" if s["pages_flagged"] else "",
        ),
        _card(
            "windows",
            "video windows",
            _int(s["windows_answered"]),
            f"answered; {s['windows_failed']:,} failed; {_n(s['events'], 'span')}",
            "bad" if s["windows_failed"] else "",
        ),
        _card(
            "failures",
            "failures",
            _int(s["failures"]),
            f"{len(s['failures_by_stage_type'])} stage/type pairs",
            "bad" if s["failures"] else "",
        ),
        _card(
            "tokens",
            "tokens",
            _int(s["input_tokens"] + s["output_tokens"]),
            f"{s['input_tokens']:,} in · {s['output_tokens']:,} out",
        ),
        _card(
            "cost",
            "cost",
            cost_text,
            cost_detail or "no prices configured" if cost is None else cost_detail,
        ),
        _card("wall", "wall time", _secs(s["wall_s"]), "from the run manifest"),
        _card(
            "pages_per_s",
            "pages/s",
            DASH if s["pages_per_s"] is None else f"{s['pages_per_s']:.2f}",
            "OCR'd pages / wall",
        ),
    ]
    by_status = "".join(
        f"<tr><td>{_badge(k, k)}</td><td class=num>{n:,}</td></tr>"
        for k, n in sorted(status.items())
    )
    by_kind = "".join(
        f"<tr><td>{_e(k)}</td><td class=num>{n:,}</td></tr>"
        for k, n in sorted(s["documents_by_kind"].items())
    )
    by_type = (
        "".join(
            f"<tr><td>{_e(st)}</td><td>{_e(et)}</td><td class=num>{n:,}</td></tr>"
            for st, et, n in s["failures_by_stage_type"]
        )
        or '<tr><td colspan=3 class="note">no failures</td></tr>'
    )
    prompts = []
    for pid in s["prompt_ids"]:
        text = _builtin_prompt_text(pid)
        body = (
            f"<details><summary>{_e(pid)}</summary><div class=msg>{_e(text)}</div></details>"
            if text
            else _e(pid)
        )
        prompts.append(body)
    options = m.get("options") or {}
    kv = [
        ("run", _e(report.run_id)),
        (
            "run status",
            _badge(
                m.get("status", "no manifest"), "ok" if m.get("status") == "succeeded" else "failed"
            ),
        ),
        ("started", _e(m.get("started_at", DASH))),
        ("finished", _e(m.get("finished_at", DASH))),
        ("model", _e(", ".join(s["models"]) or DASH)),
        ("served model", _e(", ".join(s["served_models"]))) if s["served_models"] else None,
        ("backend", _e(", ".join(s["backends"]) or DASH)),
        ("provider", _e(", ".join(s["providers"]))) if s["providers"] else None,
        ("prompt", "".join(prompts) or DASH),
        ("inputs", _e(", ".join(m.get("inputs") or []) or DASH)),
        ("output", _e(m.get("output", DASH))),
        ("run error", f"<div class=msg>{_e(m.get('error'))}</div>") if m.get("error") else None,
        (
            "options",
            f"<details><summary>{len(options)} set</summary><div class=msg>"
            f"{_e(json.dumps(options, indent=1, sort_keys=True, default=str))}"
            "</div></details>",
        ),
        (
            "versions",
            _e(", ".join(f"{k} {v}" for k, v in sorted((m.get("versions") or {}).items()) if v)),
        ),
    ]
    kv_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in (x for x in kv if x))
    return (
        f'<section id="summary"><h2>Run summary</h2><div class="cards">{"".join(cards)}</div>'
        '<div class="grid2" style="margin-top:14px">'
        f'<dl class="kv" id="run-info">{kv_html}</dl>'
        '<div><table id="docs-by-status"><thead><tr><th>status</th><th class=num>documents</th>'
        f"</tr></thead><tbody>{by_status}</tbody></table><br>"
        '<table id="docs-by-kind"><thead><tr><th>kind</th><th class=num>documents</th></tr>'
        f"</thead><tbody>{by_kind}</tbody></table></div>"
        '<div><table id="failures-by-type"><thead><tr><th>stage</th><th>error type</th>'
        f"<th class=num>failures</th></tr></thead><tbody>{by_type}</tbody></table></div>"
        "</div></section>"
    )


def _builtin_prompt_text(prompt_id: str) -> str | None:
    if not re.fullmatch(r"[a-z0-9_]+", prompt_id or ""):
        return None
    try:
        from vlbeam.pipeline.prompts import builtin_prompt

        return builtin_prompt(prompt_id).text
    except (ValueError, OSError):
        return None


def _shown_anchors(report: Report) -> set[str]:
    found = set()
    for view in report.documents:
        did = view["doc"]["doc_id"]
        found.add(_anchor("d", did))
        found |= {_anchor("p", did, p["page_number"]) for p in view["pages"]}
    found |= {_anchor("v", view["doc"]["doc_id"]) for view in report.videos}
    return found


def _suspects_html(report: Report) -> str:
    shown = _shown_anchors(report)

    def link(row: dict, unit=None) -> str:
        """The file name, linked to the page, document or video shown below if it is."""
        did, name = row.get("doc_id"), _e(row.get("source_uri"))
        if not did:
            return name
        targets = [_anchor("d", did), _anchor("v", did)]
        if unit is not None:
            targets.insert(0, _anchor("p", did, unit))
        for target in targets:
            if target in shown:
                return f'<a href="#{target}">{name}</a>'
        return name

    parts = ['<section id="suspects"><h2>Suspect first</h2>']
    # failures
    rows = "".join(
        f'<tr class="failure-row"><td>{_e(r["stage"])}</td><td>{_e(r["error_type"])}</td>'
        f"<td>{link(r, r.get('unit'))}</td><td class=num>{_e(r.get('unit'))}</td>"
        f'<td><div class="msg">{_e(r["message"])}</div>{_cut_note(r["message_cut"])}</td></tr>'
        for r in report.failures
    )
    parts.append(f'<h3 id="failures">Failures ({report.failures_total:,})</h3>')
    if report.failures_total:
        parts.append(
            '<input class="filter" type="search" placeholder="filter failures…" '
            'data-filter="#failures-table tbody tr" data-count="failures-count">'
            ' <span id="failures-count" class="note"></span>'
            '<table id="failures-table"><thead><tr><th>stage</th><th>error type</th><th>file</th>'
            f"<th class=num>unit</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>"
        )
        parts.append(_omitted(len(report.failures), report.failures_total, "failures"))
    else:
        parts.append('<p class="note">No failures.</p>')
    # truncated
    parts.append(f'<h3 id="truncated">Hit --max-new-tokens ({report.truncated_total:,})</h3>')
    if report.truncated_total:
        rows = "".join(
            f"<tr><td>{_e(r['kind'])}</td>"
            f"<td>{link(r, r.get('page_number'))}</td>"
            f"<td class=num>{_e(r.get('page_number', r.get('window_index')))}</td>"
            f"<td class=num>{_int(r.get('output_tokens'))}</td></tr>"
            for r in report.truncated
        )
        parts.append(
            '<table id="truncated-table"><thead><tr><th>unit</th><th>file</th>'
            "<th class=num>page / window</th><th class=num>output tokens</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
        parts.append(_omitted(len(report.truncated), report.truncated_total, "cut-off answers"))
    else:
        parts.append('<p class="note">No answer was cut off by --max-new-tokens.</p>')
    # quality flags
    parts.append(f'<h3 id="flagged">Quality flags ({report.flagged_total:,})</h3>')
    if not report.has_quality_flags:
        parts.append(
            '<p class="note" id="no-quality-flags">This run\'s pages table has no '
            "quality_flags column (no quality rules ran).</p>"
        )
    elif report.flagged_total:
        rows = "".join(
            f"<tr><td>{link(r, r['page_number'])}</td><td class=num>{r['page_number']}</td>"
            f"<td>{''.join(_badge(f, 'flag') for f in r['flags'])}</td></tr>"
            for r in report.flagged
        )
        parts.append(
            '<table id="flagged-table"><thead><tr><th>file</th><th class=num>page</th>'
            f"<th>flags</th></tr></thead><tbody>{rows}</tbody></table>"
        )
        parts.append(_omitted(len(report.flagged), report.flagged_total, "flagged pages"))
    else:
        parts.append('<p class="note">No page was flagged by the quality rules.</p>')
    # partial / failed documents
    parts.append(f'<h3 id="not-ok">Partial and failed documents ({report.not_ok_total:,})</h3>')
    if report.not_ok_total:
        rows = "".join(
            f"<tr><td>{_badge(d['status'], d['status'])}</td><td>{link(d)}</td>"
            f"<td>{_e(d['kind'])}</td><td class=num>{_int(d.get('num_pages'))}</td>"
            f"<td class=num>{_int(d.get('num_failures'))}</td></tr>"
            for d in report.not_ok
        )
        parts.append(
            '<table id="not-ok-table"><thead><tr><th>status</th><th>file</th><th>kind</th>'
            "<th class=num>pages</th><th class=num>failures</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
        parts.append(_omitted(len(report.not_ok), report.not_ok_total, "documents"))
    else:
        parts.append('<p class="note">Every document is ok.</p>')
    parts.append("</section>")
    return "".join(parts)


def _blank(text: str | None) -> str:
    if not text:
        return '<span class="note">(empty answer)</span>'
    return f'<span class="note">(only whitespace: {len(text):,} characters)</span>'


def _thumb_html(thumb: dict | None, alt: str) -> str:
    if thumb and thumb.get("src"):
        return f'<img class="thumb" alt="{_e(alt)}" src="{_e(thumb["src"])}">'
    note = (thumb or {}).get("note") or "no thumbnail"
    return f'<div class="nothumb">{_e(note)}</div>'


def _failures_list(rows: list[dict]) -> str:
    return "".join(
        f'<div class="msg">{_badge(r["stage"] + " · " + r["error_type"], "error")}'
        f"{_e(r['message'][:2000])}</div>"
        for r in rows
    )


def _documents_html(report: Report) -> str:
    parts = [f'<section id="documents"><h2>Documents ({report.documents_total:,})</h2>']
    if not report.documents_total:
        parts.append('<p class="note">No PDF or image in this run.</p></section>')
        return "".join(parts)
    parts.append('<label><input type="checkbox" id="suspects-only"> suspects only</label>')
    parts.append(_omitted(len(report.documents), report.documents_total, "documents"))
    for view in report.documents:
        doc = view["doc"]
        did = doc["doc_id"]
        suspect = doc["status"] != "ok" or any(
            p["failures"] or p["flags"] or p["truncated"] for p in view["pages"]
        )
        cls = (
            "doc"
            + (" suspect" if suspect else "")
            + (" failed" if doc["status"] == "failed" else "")
        )
        parts.append(
            f'<article class="{cls}" id="{_anchor("d", did)}" data-doc="{_e(did)}">'
            f"<h3>{_e(doc['source_uri'])}</h3>"
            f"<div class=meta>{_badge(doc['status'], doc['status'])}"
            f"{_e(doc['kind'])} · {_n(doc.get('num_pages'), 'page')} · "
            f"{_int(doc.get('size_bytes'))} bytes · {_int(doc.get('num_failures'))} failures · "
            f"doc_id {_e(did[:16])}…</div>"
        )
        parts.append(_failures_list(view["failures"]))
        for page in view["pages"]:
            n, row = page["page_number"], page["row"]
            failed = bool(page["failures"]) and row is None
            pcls = (
                "page"
                + (" failed" if failed else "")
                + (" suspect" if page["flags"] or page["truncated"] or page["failures"] else "")
            )
            badges = "".join(_badge(f, "flag") for f in page["flags"])
            if page["truncated"]:
                badges += _badge("hit --max-new-tokens", "length")
            if failed:
                badges += _badge("failed", "failed")
            info = ""
            if row:
                info = (
                    f"{row.get('width_px')}x{row.get('height_px')} px · "
                    f"{_int(row.get('input_tokens'))} in / {_int(row.get('output_tokens'))} "
                    f"out tokens · {row.get('finish_reason') or DASH}"
                )
            thumb = _thumb_html(report.thumbs.get(("page", did, n)), f"page {n}")
            if row is not None:
                ocr = render_markdown(page.get("text")) or _blank(page.get("text"))
                ocr += _cut_note(page.get("text_cut", 0))
                raw = (
                    f'<details><summary>raw answer</summary><div class="msg raw">'
                    f"{_e(page.get('text'))}</div></details>"
                )
            else:
                ocr, raw = _failures_list(page["failures"]), ""
            layer = page.get("text_layer")
            layer_html = (_e(layer) if layer else '<span class="note">(none)</span>') + _cut_note(
                page.get("text_layer_cut", 0)
            )
            parts.append(
                f'<div class="{pcls}" id="{_anchor("p", did, n)}" data-page="{n}">'
                f"<div><h4>page {n}</h4>{thumb}<div class=meta>{badges}</div>"
                f"<div class=meta>{info}</div></div>"
                f'<div><div class="col-title">OCR (markdown, rendered)</div>'
                f'<div class="ocr">{ocr}</div>{raw}'
                f"{_failures_list(page['failures']) if row is not None else ''}</div>"
                f'<div><div class="col-title">PDF text layer</div>'
                f'<div class="layer">{layer_html}</div></div></div>'
            )
        parts.append(_omitted(len(view["pages"]), view["pages_total"], "pages of this document"))
        parts.append("</article>")
    parts.append("</section>")
    return "".join(parts)


def _ticks(duration: float) -> list[float]:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if duration / step <= 10:
            break
    else:
        step = duration / 10
    return [i * step for i in range(int(duration / step) + 1)]


def _pct(value: float, duration: float) -> str:
    return f"{max(0.0, min(100.0, value / duration * 100.0)):.4f}%"


def _videos_html(report: Report) -> str:
    parts = [f'<section id="videos"><h2>Videos ({report.videos_total:,})</h2>']
    if not report.videos_total:
        parts.append('<p class="note">No video in this run.</p></section>')
        return "".join(parts)
    parts.append(_omitted(len(report.videos), report.videos_total, "videos"))
    for view in report.videos:
        doc, duration = view["doc"], view["duration_s"] or 0.0
        did = doc["doc_id"]
        cls = (
            "video"
            + (" suspect" if doc["status"] != "ok" else "")
            + (" failed" if doc["status"] == "failed" else "")
        )
        n_failed = sum(
            1 for w in view["windows"] + view["unplaced_windows"] if w["state"] == "failed"
        )
        parts.append(
            f'<article class="{cls}" id="{_anchor("v", did)}" data-doc="{_e(did)}">'
            f"<h3>{_e(doc['source_uri'])}</h3>"
            f"<div class=meta>{_badge(doc['status'], doc['status'])}"
            f"{_secs(duration)} · "
            f"{_n(len(view['windows']) + len(view['unplaced_windows']), 'window')},"
            f" {n_failed} failed · {_int(doc.get('size_bytes'))} bytes · "
            f"doc_id {_e(did[:16])}…</div>"
        )
        parts.append(_failures_list(view["failures"]))
        if duration <= 0:
            parts.append('<p class="note">Duration unknown: no timeline.</p></article>')
            continue
        axis = "".join(
            f'<span class="tick" style="left:{_pct(t, duration)}">'
            f"{_clock(t, 0 if t == int(t) else 1)}</span>"
            for t in _ticks(duration)
        )
        drawn = view["windows"]
        if len(drawn) > MAX_WINDOWS_DRAWN:  # a long video: draw the windows that need a look
            drawn = [w for w in drawn if w["state"] != "ok"][:MAX_WINDOWS_DRAWN]
        wins = "".join(
            f'<div class="win {w["state"]}" data-window="{w["index"]}" '
            f'data-start="{w["start_s"]:.3f}" data-end="{w["end_s"]:.3f}" '
            f'style="left:{_pct(w["start_s"], duration)};'
            f'width:{_pct(w["end_s"] - w["start_s"], duration)};top:{2 + (w["index"] % 2) * 17}px"'
            f' title="{_e(_window_title(w))}">{"✕ " if w["state"] == "failed" else ""}'
            f"#{w['index']}</div>"
            for w in drawn
        )
        if len(drawn) < len(view["windows"]):
            wins += (
                f'<span class="rl-note">{len(view["windows"]) - len(drawn):,} answered windows '
                "not drawn</span>"
            )
        for timeline in view["timelines"]:
            for s in timeline["spans"]:
                title = _span_text(s["start_s"], s["end_s"]) + " " + (s.get("description") or "")
                s["title"] = title[:300]
            query = timeline["query"]
            title = f"query: {query}" if query is not None else "event timeline"
            lanes = timeline["lanes"]
            spans_html = "".join(
                f'<div class="span" data-start="{s["start_s"]:.3f}" data-end="{s["end_s"]:.3f}" '
                f'style="left:{_pct(s["start_s"], duration)};'
                f'width:{_pct(s["end_s"] - s["start_s"], duration)};top:{3 + s["lane"] * 22}px" '
                f'title="{_e(s["title"])}"></div>'
                for s in timeline["spans"]
            )
            cards = []
            for k, s in enumerate(timeline["spans"]):
                thumb = (
                    report.thumbs.get(("frame", did, round(s["start_s"], 3)))
                    if k < report.limits.max_span_thumbnails
                    else None
                )
                if thumb is None and report.limits.thumbnails and report.thumb_stats:
                    thumb = {"note": "no thumbnail: past the per-timeline thumbnail limit"}
                windows = ", ".join(str(i) for i in s.get("window_indexes") or [])
                cards.append(
                    f'<div class="spancard" data-start="{s["start_s"]:.3f}">'
                    f"{_thumb_html(thumb, 'frame at {:.1f} s'.format(s['start_s']))}"
                    f'<div class="when">{_clock(s["start_s"])} {DASH} {_clock(s["end_s"])}</div>'
                    f"<div>{_e(s.get('description'))}</div>{_cut_note(s.get('description_cut', 0))}"
                    f"<div class=meta>windows {_e(windows)}</div></div>"
                )
            parts.append(
                f'<div class="timeline" data-query="{_e(query if query is not None else "")}">'
                f'<div class="tl-title">{_e(title)} · {_n(timeline["spans_total"], "span")}</div>'
                '<div class="tl">'
                f'<div class="tl-row" style="height:36px"><span class="rl">windows</span>'
                f'<div class="track windows">{wins}</div></div>'
                f'<div class="tl-row" style="height:{6 + lanes * 22}px">'
                '<span class="rl">spans</span>'
                f'<div class="track spans-track">{spans_html}</div></div>'
                f'<div class="axis">{axis}</div></div>'
                + ("" if timeline["spans"] else '<p class="note">No span found.</p>')
                + f'<div class="spans">{"".join(cards)}</div>'
                + _omitted(len(timeline["spans"]), timeline["spans_total"], "spans")
                + "</div>"
            )
        parts.append(_omitted(len(view["timelines"]), view["timelines_total"], "query timelines"))
        failed_rows = "".join(
            f"<tr><td class=num>{w['index']}</td><td>"
            f"{_span_text(w['start_s'], w['end_s'])}"
            f"</td><td>{_failures_list(w['failures'])}</td></tr>"
            for w in view["windows"] + view["unplaced_windows"]
            if w["state"] == "failed"
        )
        if failed_rows:
            parts.append(
                '<table class="failed-windows"><thead><tr><th class=num>window</th><th>time</th>'
                f"<th>failure</th></tr></thead><tbody>{failed_rows}</tbody></table>"
            )
        parts.append("</article>")
    parts.append("</section>")
    return "".join(parts)


def _window_title(w: dict) -> str:
    text = f"window {w['index']}: {_clock(w['start_s'])}{DASH}{_clock(w['end_s'])} ({w['state']})"
    for failure in w["failures"]:
        text += f"\n{failure['stage']} {failure['error_type']}: {failure['message'][:300]}"
    return text


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def render_html(report: Report, *, csp: bool = True) -> str:
    """The report as one self-contained HTML document (pure: data in, string out)."""
    s = report.summary
    thumbs = report.thumb_stats or {}
    if thumbs.get("disabled"):
        thumb_text = "Thumbnails were switched off (--no-thumbnails)."
    else:
        thumb_text = (
            f"Thumbnails: re-rendered from each source_uri when this report was made "
            f"(pypdfium2 for PDF pages, PyAV for the frame at a span's start), "
            f"{thumbs.get('made', 0):,} made ({thumbs.get('bytes', 0) / 1e3:,.0f} kB), "
            f"{thumbs.get('left_out', 0):,} left out by the budget, "
            f"{thumbs.get('unavailable', 0):,} unavailable."
        )
    lim = report.limits
    policy = f'<meta http-equiv="Content-Security-Policy" content="{_e(_csp())}">' if csp else ""
    suspects = (
        report.failures_total + report.truncated_total + report.flagged_total + report.not_ok_total
    )
    nav = (
        '<nav><a href="#summary">Summary</a>'
        f'<a href="#suspects">Suspect first ({suspects:,})</a>'
        f'<a href="#documents">Documents ({report.documents_total:,})</a>'
        f'<a href="#videos">Videos ({report.videos_total:,})</a></nav>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"{policy}"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        '<link rel="icon" href="data:,">'
        f"<title>vlbeam report · {_e(report.run_id)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>vlbeam QA report</h1><div class=sub>run {_e(report.run_id)} · "
        f"{_int(s['documents'])} documents · {_int(s['failures'])} failures · generated "
        f"{_e(report.generated_at)}</div></header>{nav}<main>"
        + _summary_html(report)
        + _suspects_html(report)
        + _documents_html(report)
        + _videos_html(report)
        + "</main><footer>"
        f"<p>{_e(thumb_text)}</p><p>Bounds: at most {lim.max_documents} documents x "
        f"{lim.max_pages_per_document} pages, {lim.max_videos} videos, {lim.max_rows} rows per "
        f"suspect table, {lim.max_text_chars:,} characters per text; suspects are shown first. "
        "Counts in the summary cover every row of the run.</p></footer>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


# ------------------------------------------------------------------------------ entry point


def build_report(
    output: str,
    destination: str,
    run_id: str | None = None,
    limits: ReportLimits | None = None,
    source_root: str | None = None,
) -> Report:
    report = collect(load_run(output, run_id), limits)
    add_thumbnails(report, source_root)
    data = render_html(report).encode("utf-8")
    if "://" in destination:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(destination, mime_type="text/html") as handle:
            handle.write(data)
    else:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        Path(destination).write_bytes(data)
    report.thumb_stats["html_bytes"] = len(data)
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vlbeam report",
        description="Write one self-contained HTML QA report of a run (no server, no external "
        "URL): summary, suspects first, pages beside their OCR text, video timelines.",
    )
    d = ReportLimits()
    parser.add_argument("dir", help="the job's --output folder (local, gs://, s3://)")
    parser.add_argument("-o", "--output", required=True, help="the HTML file to write")
    parser.add_argument("--run", default=None, help="run id (default: the latest run)")
    parser.add_argument(
        "--source-root",
        default=None,
        help="folder that relative source_uris are resolved against (default: the current folder)",
    )
    parser.add_argument("--no-thumbnails", action="store_true")
    parser.add_argument("--max-documents", type=int, default=d.max_documents)
    parser.add_argument("--max-pages-per-document", type=int, default=d.max_pages_per_document)
    parser.add_argument("--max-videos", type=int, default=d.max_videos)
    parser.add_argument("--max-rows", type=int, default=d.max_rows, help="rows per suspect table")
    parser.add_argument("--max-text-chars", type=int, default=d.max_text_chars)
    parser.add_argument("--max-thumbnail-mb", type=float, default=d.max_thumbnail_bytes / 1e6)
    parser.add_argument(
        "--thumbnail-size", type=int, default=d.thumb_long_side, help="long side of thumbnails, px"
    )
    args = parser.parse_args(argv)
    try:
        limits = ReportLimits(
            max_documents=args.max_documents,
            max_pages_per_document=args.max_pages_per_document,
            max_videos=args.max_videos,
            max_rows=args.max_rows,
            max_text_chars=args.max_text_chars,
            thumbnails=not args.no_thumbnails,
            max_thumbnail_bytes=int(args.max_thumbnail_mb * 1e6),
            thumb_long_side=args.thumbnail_size,
        )
        report = build_report(args.dir, args.output, args.run, limits, args.source_root)
    except (ValueError, OSError) as exc:
        print(f"vlbeam report: {exc}", file=sys.stderr)
        return 2
    s, stats = report.summary, report.thumb_stats
    print(
        f"{args.output}: run {report.run_id}, {s['documents']} documents, {s['failures']} "
        f"failures, {stats.get('made', 0)} thumbnails, {stats['html_bytes'] / 1e6:.2f} MB"
    )
    return 0


__all__ = [
    "Report",
    "ReportLimits",
    "add_thumbnails",
    "build_report",
    "collect",
    "load_run",
    "main",
    "render_html",
    "render_markdown",
]
