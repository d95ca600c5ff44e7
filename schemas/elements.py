"""Element types that travel between pipeline stages (all frozen, all small).

Pages travel as encoded image bytes, never as pickled arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlbeam.schemas.errors import error_message, error_type
from vlbeam.schemas.meta import Meta, meta_column

KINDS = ("pdf", "image", "video", "audio", "unknown")


@dataclass(frozen=True)
class InputFile:
    """One input before ingest: a file URI and the caller's keys it carries (`schemas/meta.py`).
    (uri, meta) is its identity: the same file with other keys is another document."""

    uri: str
    meta: Meta = None

    def __post_init__(self) -> None:
        if not self.uri:
            raise ValueError("an input needs a uri")

    @property
    def key(self) -> tuple[str, Meta]:
        return self.uri, self.meta


@dataclass(frozen=True)
class SourceFile:
    """One matched input file after ingest: its identity and sniffed kind. `doc_id` is
    `schemas.ids.document_id(content_sha256, meta)`; `content_sha256` (the bytes' own hash:
    what PDF passwords are keyed by) defaults to `doc_id` when there is no meta."""

    uri: str
    doc_id: str | None
    kind: str
    size_bytes: int | None
    meta: Meta = None
    content_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")
        if self.doc_id is not None and len(self.doc_id) != 64:
            raise ValueError("doc_id must be a SHA-256 hex digest")
        if self.content_sha256 is None and self.meta is None:
            object.__setattr__(self, "content_sha256", self.doc_id)

    @property
    def key(self) -> tuple[str, Meta]:
        """What the `documents` row of this input is joined by: (uri, meta)."""
        return self.uri, self.meta

    def failure(self, exc: BaseException, stage: str, unit: int | None = None) -> Failure:
        """A failure of this file (or of one of its units), carrying its keys."""
        return Failure.from_exception(
            exc, source_uri=self.uri, doc_id=self.doc_id, stage=stage, unit=unit, meta=self.meta
        )


@dataclass(frozen=True)
class PageRange:
    """A unit of render work: pages first..last (1-based, inclusive) of one document."""

    source: SourceFile
    first_page: int
    last_page: int
    num_pages: int

    def __post_init__(self) -> None:
        if not 1 <= self.first_page <= self.last_page <= self.num_pages:
            raise ValueError(
                f"bad page range {self.first_page}..{self.last_page} of {self.num_pages}"
            )

    @property
    def page_numbers(self) -> range:
        return range(self.first_page, self.last_page + 1)


@dataclass(frozen=True)
class TextLine:
    """A line of a PDF page's own text with its box in PDF points from the top-left of the
    page as displayed (after /Rotate and the crop box), as pdfium's text rectangles give it."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class PageRef:
    """What identifies a page and travels with its request and result through the inference
    stage (`transforms/inference.py`) to its `pages` row."""

    doc_id: str
    source_uri: str
    page_number: int
    width_px: int
    height_px: int
    text_layer: str | None = None
    blank: bool = False  # near-uniform render, no text-layer characters: no model call
    image_coverage: float | None = None  # share of the page covered by raster images
    meta: Meta = None  # the input's carried keys
    # the page as displayed, in the units of its boxes: PDF points (after /Rotate and the
    # crop box) for PDF pages, pixels of the original image for images; None: unknown
    page_width: float | None = None
    page_height: float | None = None
    page_unit: str | None = None  # pt | px
    text_lines: tuple[TextLine, ...] = ()  # with boxes, when the render was asked for them

    def __post_init__(self) -> None:
        if self.page_number < 1:
            raise ValueError("page_number is 1-based")
        if self.page_unit not in (None, "pt", "px"):
            raise ValueError("page_unit must be pt or px")

    def failure(self, stage: str, error_type: str, message: str) -> Failure:
        return Failure(
            self.source_uri, self.doc_id, stage, error_type, message, self.page_number, self.meta
        )


GROUNDING_PASSES = ("dense", "coarse", "refine")


@dataclass(frozen=True)
class WindowPass:
    """Which grounding pass a window belongs to (`--grounding-strategy`): `dense` (every
    window of the video, as planned up front), `coarse` (a long, sparsely sampled window that
    looks for candidates) or `refine` (a dense window planned around candidates, with the
    coarse windows that led to it and the queries, 1-based, it was planned for; none: all,
    as after a coarse answer that could not be read)."""

    name: str = "dense"
    coarse_indexes: tuple[int, ...] = ()
    query_numbers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in GROUNDING_PASSES:
            raise ValueError(f"grounding pass must be one of {GROUNDING_PASSES}, not {self.name!r}")
        if (self.coarse_indexes or self.query_numbers) and self.name != "refine":
            raise ValueError("only a refine window has coarse windows and queries it came from")

    def wants(self, query_number: int | None) -> bool:
        """Whether a span of this query counts from a window of this pass."""
        return not self.query_numbers or query_number in self.query_numbers


DENSE = WindowPass()


@dataclass(frozen=True)
class VideoWindow:
    """A unit of video work: the time range [start_s, end_s) of one video."""

    source: SourceFile
    index: int
    start_s: float
    end_s: float
    duration_s: float
    grounding_pass: WindowPass = DENSE

    def __post_init__(self) -> None:
        if self.index < 0 or not 0 <= self.start_s < self.end_s <= self.duration_s + 1e-6:
            raise ValueError(f"bad window {self.index}: {self.start_s}..{self.end_s}")

    def describe(self) -> str:
        kind = "" if self.grounding_pass.name == "dense" else f"{self.grounding_pass.name} "
        return f"{kind}window {self.index} ({self.start_s:.1f}-{self.end_s:.1f} s)"


@dataclass(frozen=True)
class WindowRef:
    """What identifies a video window and travels with its request and result through the
    inference stage (`transforms/inference.py`) to its `video_windows` row."""

    doc_id: str
    source_uri: str
    window_index: int
    start_s: float
    end_s: float
    frame_times_s: tuple[float, ...]
    grounding_pass: WindowPass = DENSE
    meta: Meta = None  # the input's carried keys

    def failure(self, stage: str, error_type: str, message: str) -> Failure:
        if self.grounding_pass.name != "dense":  # indexes count per pass: say which
            message = f"{self.grounding_pass.name} window {self.window_index}: {message}"
        return Failure(
            self.source_uri, self.doc_id, stage, error_type, message, self.window_index, self.meta
        )


@dataclass(frozen=True)
class WindowFrames:
    """A window's sampled frames (JPEG bytes) with their true times in seconds."""

    ref: WindowRef
    frames: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.frames) != len(self.ref.frame_times_s) or not self.frames:
            raise ValueError("a window needs one time per frame, and at least one frame")


@dataclass(frozen=True)
class PageImage:
    """A rendered page: its reference plus the encoded image bytes."""

    ref: PageRef
    image: bytes
    image_format: str


@dataclass(frozen=True)
class VLRequest:
    """One model call: images (encoded bytes) and a text prompt.

    With `frame_times_s` set, the images are the frames of one video clip, shown to
    the model as video with those timestamps (seconds from the start of the video).
    """

    images: tuple[bytes, ...]
    prompt: str
    max_new_tokens: int | None = None
    frame_times_s: tuple[float, ...] | None = None
    temperature: float | None = None  # None: the backend's own (greedy); set by retries
    # --extract: the answer must be JSON valid against this JSON Schema (canonical JSON text);
    # backends that can constrain decoding to it do (vLLM/SGLang/API `response_format`)
    json_schema: str | None = None
    prompt_first: bool = False  # the text before the image(s) (olmOCR's order), not after
    rotation: int = 0  # degrees the page image was turned counter-clockwise (olmOCR retry)

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ValueError("prompt must not be empty")
        if self.frame_times_s is not None and len(self.frame_times_s) != len(self.images):
            raise ValueError("a video request needs one timestamp per frame")

    @property
    def num_bytes(self) -> int:
        return sum(len(image) for image in self.images)


@dataclass(frozen=True)
class VLResult:
    """What one model call returned, or why it failed (error_type set)."""

    text: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    latency_s: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    reasoning: str | None = None  # a thinking model's reasoning, never mixed into text
    served_model: str | None = None  # the model as the server reports it
    request_id: str | None = None
    cost_usd: float | None = None
    text_source: str = "model"  # or "text_layer" / "blank": no model call was made
    retries: int = 0  # extra calls made for this answer (--retry-degenerate, rotation)
    rotation: int = 0  # degrees the page was turned counter-clockwise before this answer

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @classmethod
    def failed(cls, exc: BaseException) -> VLResult:
        return cls(text=None, error_type=error_type(exc), error_message=error_message(exc))


@dataclass(frozen=True)
class Failure:
    """One row of the `failures` table, before the run id is stamped on."""

    source_uri: str
    doc_id: str | None
    stage: str
    error_type: str
    message: str
    unit: int | None = None
    meta: Meta = None  # the failed input's carried keys

    @property
    def key(self) -> tuple[str, Meta]:
        return self.source_uri, self.meta

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        source_uri: str,
        doc_id: str | None,
        stage: str,
        unit: int | None = None,
        meta: Meta = None,
    ) -> Failure:
        return cls(
            source_uri=source_uri,
            doc_id=doc_id,
            stage=stage,
            error_type=error_type(exc),
            message=error_message(exc),
            unit=unit,
            meta=meta,
        )

    def to_row(self, run_id: str) -> dict:
        return {
            "source_uri": self.source_uri,
            "doc_id": self.doc_id,
            "stage": self.stage,
            "unit": self.unit,
            "error_type": self.error_type,
            "message": self.message,
            "run_id": run_id,
            "meta": meta_column(self.meta),
        }


@dataclass(frozen=True)
class DocumentFacts:
    """What a stage learnt about one document, joined into its `documents` row by uri."""

    uri: str
    num_pages: int | None = None
    duration_s: float | None = None
    skipped: bool = False  # --skip-existing: processed OK by an earlier run
    meta: Meta = None  # with `uri`, which input the facts are about

    @property
    def key(self) -> tuple[str, Meta]:
        return self.uri, self.meta

    def merged(self, other: DocumentFacts) -> DocumentFacts:
        return DocumentFacts(
            self.uri,
            self.num_pages if other.num_pages is None else other.num_pages,
            self.duration_s if other.duration_s is None else other.duration_s,
            self.skipped or other.skipped,
            self.meta,
        )


@dataclass(frozen=True)
class Provenance:
    """Who produced a row: stamped on every output row."""

    model: str
    backend: str
    prompt_id: str
    run_id: str
    provider: str | None = None
