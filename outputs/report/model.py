"""What the report is made of: its bounds (`ReportLimits`) and the collected `Report` (its
parts are the typed views in views.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlbeam.outputs.report.views import (
    Document,
    DocumentView,
    Failure,
    FlaggedPage,
    Summary,
    Thumb,
    Truncated,
    VideoView,
)

STAGES = ("ingest", "sniff", "task", "split", "render", "decode", "inference", "parse", "extract")
PAGE_KINDS = ("pdf", "image")
QUALITY_FLAGS = "quality_flags"
MAX_DESCRIPTION_CHARS = 300  # per span
MAX_WINDOWS_DRAWN = 200  # per timeline; past it only failed and missing windows are drawn


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


@dataclass
class Report:
    """The collected report. Its views are frozen; the report itself is not, because
    thumbnails (and the built-in prompts' texts) are added after `collect`."""

    run_id: str
    manifest: dict | None
    limits: ReportLimits
    summary: Summary
    failures: tuple[Failure, ...]
    failures_total: int
    truncated: tuple[Truncated, ...]
    truncated_total: int
    flagged: tuple[FlaggedPage, ...]
    flagged_total: int
    has_quality_flags: bool
    not_ok: tuple[Document, ...]
    not_ok_total: int
    documents: tuple[DocumentView, ...]
    documents_total: int
    videos: tuple[VideoView, ...]
    videos_total: int
    # ("page", doc_id, page_number) or ("frame", doc_id, time_s rounded to ms) -> thumbnail
    thumbs: dict[tuple[str, str, float], Thumb] = field(default_factory=dict)
    thumb_stats: dict[str, int | bool] = field(default_factory=dict)
    generated_at: str = ""
    prompt_texts: dict[str, str] = field(default_factory=dict)  # built-in prompts, by id
