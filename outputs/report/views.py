"""What the report shows, as typed, frozen views: built by `collect.py` from the run's Arrow
rows (only the columns the page uses), read by the Jinja2 templates by attribute.

Each row view has `from_row(row)`, which takes a table row (a dict from `Table.to_pylist()`)
and keeps the fields the view names; lists become tuples so a view never changes after it is
made.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Self

WINDOW_STATES = ("ok", "failed", "missing")
TRUNCATED_KINDS = ("page", "window")


class _FromRow:
    @classmethod
    def from_row(cls, row: dict[str, Any], **extra: Any) -> Self:
        """The view of one table row: the fields this view names (absent ones get their
        default), then `extra`."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        values = {k: v for k, v in row.items() if k in names}
        return cls(**{**values, **extra})


@dataclass(frozen=True)
class Failure(_FromRow):
    """A `failures` row; `message_cut` counts the characters cut off `message`."""

    source_uri: str
    doc_id: str | None
    stage: str
    unit: int | None
    error_type: str
    message: str
    message_cut: int = 0


@dataclass(frozen=True)
class Document(_FromRow):
    """The `documents` columns the report uses (a PDF, an image or a video)."""

    doc_id: str | None
    source_uri: str
    kind: str
    status: str
    size_bytes: int | None = None
    num_pages: int | None = None
    duration_s: float | None = None
    num_failures: int = 0
    meta: Any = None  # the input's carried keys (its doc_id hashes them with the content)


@dataclass(frozen=True)
class Truncated(_FromRow):
    """A page or window whose answer hit --max-new-tokens (`finish_reason` = length)."""

    kind: str  # page | window
    doc_id: str
    source_uri: str
    output_tokens: int | None
    page_number: int | None = None
    window_index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in TRUNCATED_KINDS:
            raise ValueError(f"a truncated unit is a page or a window, not {self.kind!r}")

    @property
    def unit(self) -> int | None:
        return self.page_number if self.kind == "page" else self.window_index


@dataclass(frozen=True)
class FlaggedPage:
    """A page with at least one quality flag."""

    doc_id: str
    source_uri: str
    page_number: int
    flags: tuple[str, ...]


@dataclass(frozen=True)
class PageRow(_FromRow):
    """The `pages` columns shown beside a page (light ones: no text)."""

    width_px: int
    height_px: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class PageView:
    """One shown page: its row (None when the page failed), flags, failures, and its
    answer and text layer cut to the report's limit (`*_cut`: characters left out)."""

    page_number: int
    row: PageRow | None
    flags: tuple[str, ...] = ()
    failures: tuple[Failure, ...] = ()
    truncated: bool = False
    text: str | None = None
    text_cut: int = 0
    text_layer: str | None = None
    text_layer_cut: int = 0


@dataclass(frozen=True)
class ExtractionView:
    """One `extractions` row shown beside its document (--extract)."""

    scope: str
    page_number: int | None
    schema_id: str
    json: str | None
    valid: bool
    errors: tuple[str, ...]
    attempts: int
    guided: str
    chunks: int

    @classmethod
    def from_row(cls, row: dict) -> ExtractionView:
        return cls(row["scope"], row["page_number"], row["schema_id"], row["json"],
                   bool(row["valid"]), tuple(row["errors"] or ()), row["attempts"],
                   row["guided"], row["chunks"])  # fmt: skip


def extraction_order(view: ExtractionView) -> tuple:
    """Invalid first, then by page (the document's own extraction before its pages')."""
    return (view.valid, view.page_number or 0, view.schema_id)


@dataclass(frozen=True)
class DocumentView:
    """A shown PDF or image: the chosen pages, how many it has, its own failures and its
    extractions (invalid first)."""

    doc: Document
    pages: tuple[PageView, ...]
    pages_total: int
    pages_omitted: int
    failures: tuple[Failure, ...] = ()
    extractions: tuple[ExtractionView, ...] = ()


@dataclass(frozen=True)
class WindowView:
    """A video window, answered, failed or missing; its times come from its row or, when it
    has none, from the job's window plan (None when neither knows)."""

    index: int
    start_s: float | None
    end_s: float | None
    state: str  # ok | failed | missing
    failures: tuple[Failure, ...] = ()

    def __post_init__(self) -> None:
        if self.state not in WINDOW_STATES:
            raise ValueError(f"window state must be one of {WINDOW_STATES}, not {self.state!r}")


@dataclass(frozen=True)
class Span:
    """A `video_events` row on a timeline, with the lane it is drawn in."""

    start_s: float
    end_s: float
    description: str | None
    description_cut: int = 0
    window_indexes: tuple[int, ...] = ()
    lane: int = 0


@dataclass(frozen=True)
class Timeline:
    """One query's spans (None: the event timeline), bounded; `lanes` rows are drawn."""

    query: str | None
    spans: tuple[Span, ...]
    lanes: int
    spans_total: int


@dataclass(frozen=True)
class VideoView:
    doc: Document
    duration_s: float
    windows: tuple[WindowView, ...]
    unplaced_windows: tuple[WindowView, ...]  # no start/end known: listed, not drawn
    timelines: tuple[Timeline, ...]
    timelines_total: int
    failures: tuple[Failure, ...] = ()


@dataclass(frozen=True)
class Summary:
    """Counts over every row of the run, whatever the report shows."""

    documents: int
    documents_by_status: dict[str, int]
    documents_by_kind: dict[str, int]
    pages_expected: int
    pages_ok: int
    pages_failed: int
    pages_truncated: int
    pages_flagged: int | None  # None: the pages table has no quality_flags column
    videos: int
    windows_answered: int
    windows_failed: int
    windows_truncated: int
    events: int
    failures: int
    failures_by_stage_type: tuple[tuple[str, str, int], ...]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    wall_s: float | None
    pages_per_s: float | None
    models: tuple[str, ...]
    backends: tuple[str, ...]
    prompt_ids: tuple[str, ...]
    served_models: tuple[str, ...]
    providers: tuple[str, ...]
    max_new_tokens: int | None
    # frames sent per grounding pass, and what a dense pass would have sent (coarse-to-fine)
    frames_by_pass: tuple[tuple[str, int], ...] = ()
    dense_frames: int | None = None


@dataclass(frozen=True)
class Card:
    """A summary card: `data-metric` (what tests and readers look up), its label, the value
    and a detail line, formatted; `tone` is "", "warn" or "bad"."""

    metric: str
    label: str
    value: str
    detail: str
    tone: str


@dataclass(frozen=True)
class Thumb:
    """A thumbnail (`src`, a data: URI) or the note saying why there is none."""

    src: str | None = None
    note: str | None = None
    time_s: float | None = None  # a frame's time, as decoded

    def __post_init__(self) -> None:
        if (self.src is None) == (self.note is None):
            raise ValueError("a thumbnail has either a src or a note")


def clip(text: str | None, limit: int) -> tuple[str | None, int]:
    """(text cut to `limit` characters, how many were cut): what the views' `*_cut` count."""
    if text is None or len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit
