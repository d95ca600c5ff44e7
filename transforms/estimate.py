"""What a run will do and cost, counted without running it (`vlbeam plan`, and `--max-cost`
checked at launch).

The inputs go the run's way as far as it is cheap: patterns expanded with Beam `FileSystems`
(`ingest.match_pattern`), each file sniffed from its first bytes (`media.sniff`) and refused
for the same reasons (`ingest.unprocessable_reason`), PDF pages counted and sized from their
page boxes, images from their headers, videos probed, all in a helper process (a hostile file
is reported, never takes the planner down), and cut into units by the run's own planners
(`media.work_units`: page ranges, `plan_windows`; `video_decode.target_times`, `frame_size`).
Nothing is rendered or decoded: the probe reads one frame per video (its time origin and
rotation), as the run's own planning does. Input tokens come from `backends.vision_tokens`,
the function the run's accounting uses too.

Upper bounds, marked as such: every page that would render counts as a model call (blank
pages and `--text-layer-policy prefer` skip some at render time), every sampling instant as a
frame (a video with fewer frames, or `--sampling keyframes`, sends fewer), every call as
answering `--max-new-tokens`, and `--retry-degenerate N` as N more calls per page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.elements import SourceFile
from vlbeam.schemas.errors import error_message, error_type
from vlbeam.transforms.backends.vision_tokens import TokenCounter
from vlbeam.transforms.media.helper_process import OPEN_TIMEOUT_S, HelperProcess
from vlbeam.transforms.media.pdf_passwords import pdf_password
from vlbeam.transforms.media.sniff import HEAD_BYTES, sniff_kind
from vlbeam.transforms.media.video_decode import frame_size, target_times
from vlbeam.transforms.media.work_units import VideoConfig, plan_windows

logger = logging.getLogger(__name__)

KINDS = ("pdf", "image", "video")
# the JSON keys every plan has (the contract), then the extras
TOTAL_KEYS = ("files", "pages", "video_seconds", "windows", "frames", "model_calls",
              "input_tokens", "max_output_tokens", "cost_usd")  # fmt: skip


@dataclass(frozen=True)
class Prices:
    """USD per million tokens (`--price-input-per-mtok`, `--price-output-per-mtok`)."""

    input_per_mtok: float | None = None
    output_per_mtok: float | None = None

    def __post_init__(self) -> None:
        for value in (self.input_per_mtok, self.output_per_mtok):
            if value is not None and value < 0:
                raise ValueError("prices must be >= 0")

    @property
    def set(self) -> bool:
        return self.input_per_mtok is not None or self.output_per_mtok is not None

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float | None:
        if not self.set:
            return None
        return (
            input_tokens * (self.input_per_mtok or 0.0)
            + output_tokens * (self.output_per_mtok or 0.0)
        ) / 1e6

    def nano_usd(self, input_tokens: int, output_tokens: int) -> int:
        """Integer nano-dollars (shared counters add integers exactly)."""
        return round((self.cost_usd(input_tokens, output_tokens) or 0.0) * 1e9)


@dataclass(frozen=True)
class PlanSettings:
    """What a plan needs from the run's flags."""

    tasks: frozenset[str]
    render: RenderConfig
    video: VideoConfig
    ocr_prompt: str
    grounding_prompt: str
    max_new_tokens: int
    retry_degenerate: int = 0
    prices: Prices = field(default_factory=Prices)


@dataclass(frozen=True)
class FilePlan:
    """One matched file (or a pattern that matched none): its units and tokens, or why the
    run would fail it (`error`: 'ErrorType: message')."""

    uri: str
    kind: str
    pages: int = 0
    video_seconds: float = 0.0
    windows: int = 0
    frames: int = 0
    page_tokens: tuple[int, ...] = ()  # per page; 0 for a page the run would refuse
    window_tokens: tuple[int, ...] = ()  # per window
    window_frames: tuple[int, ...] = ()  # per window
    unit_failures: int = 0  # pages the run would refuse (degenerate, too large, unloadable)
    error: str | None = None

    @property
    def model_calls(self) -> int:
        return sum(1 for t in self.page_tokens if t) + len(self.window_tokens)

    @property
    def input_tokens(self) -> int:
        return sum(self.page_tokens) + sum(self.window_tokens)


@dataclass(frozen=True)
class Plan:
    files: tuple[FilePlan, ...]
    settings: PlanSettings
    tokenizer: str | None = None  # the folder whose tokenizer counted the prompts

    def totals(self, kinds: Iterable[str] | None = None) -> dict:
        """The figures of `kinds` (default: every file)."""
        chosen = [f for f in self.files if kinds is None or f.kind in set(kinds)]
        ok = [f for f in chosen if f.error is None]
        pages = sum(f.pages for f in ok)
        page_calls = sum(1 for f in ok for t in f.page_tokens if t)
        window_calls = sum(f.windows for f in ok)
        retries = self.settings.retry_degenerate
        calls = page_calls * (1 + retries) + window_calls
        page_tokens = sum(sum(f.page_tokens) for f in ok)
        input_tokens = page_tokens + sum(sum(f.window_tokens) for f in ok)
        max_input = input_tokens + page_tokens * retries
        max_output = calls * self.settings.max_new_tokens
        cost = self.settings.prices.cost_usd(max_input, max_output)
        return {
            "files": sum(1 for f in chosen if f.kind != "pattern"),
            "pages": pages,
            "video_seconds": round(sum(f.video_seconds for f in ok), 3),
            "windows": window_calls,
            "frames": sum(f.frames for f in ok),
            "model_calls": calls,
            "input_tokens": input_tokens,
            "max_output_tokens": max_output,
            "cost_usd": None if cost is None else round(cost, 6),
            "max_input_tokens": max_input,
            "units": pages + window_calls,
            "failing_files": sum(1 for f in chosen if f.error is not None),
            "failing_pages": sum(f.unit_failures for f in ok),
        }

    def to_json(self) -> dict:
        return {
            **self.totals(),
            "by_kind": {kind: self.totals([kind]) for kind in KINDS},
            "failures": [
                {"uri": f.uri, "kind": f.kind, "error": f.error} for f in self.files if f.error
            ],
            "upper_bounds": [
                "model_calls counts every page that renders (blank pages and --text-layer-policy "
                "prefer skip some) and --retry-degenerate retries",
                "max_output_tokens = model_calls x --max-new-tokens",
                "cost_usd prices max input (with retries) and max output tokens",
            ],
            "tokenizer": self.tokenizer,
        }


def make_plan(
    patterns: Iterable[str],
    settings: PlanSettings,
    counter: TokenCounter,
    helper: HelperProcess | None = None,
) -> Plan:
    """Count what a run over `patterns` would do (see the module docstring)."""
    from vlbeam.transforms.ingest import match_pattern

    own = helper is None
    helper = helper or HelperProcess(
        max(settings.render.max_memory_mb, settings.video.max_memory_mb)
    )
    files: list[FilePlan] = []
    seen: set[str] = set()
    try:
        for pattern in patterns:
            paths, failure = match_pattern(pattern)
            if failure is not None:
                files.append(FilePlan(pattern, "pattern", error=_failure_text(failure)))
            for uri in paths:
                if uri not in seen:
                    seen.add(uri)
                    files.append(plan_file(uri, settings, counter, helper))
    finally:
        if own:
            helper.close()
    return Plan(tuple(files), settings, counter.folder)


def _failure_text(failure) -> str:
    return f"{failure.error_type}: {failure.message}"


def _error(exc: BaseException) -> str:
    return f"{error_type(exc)}: {error_message(exc, 300)}"


def plan_file(
    uri: str, settings: PlanSettings, counter: TokenCounter, helper: HelperProcess
) -> FilePlan:
    """One file's plan; a file the run would fail gets its error instead of units."""
    from vlbeam.transforms.ingest import unprocessable_reason

    try:
        source, detail = _sniff(uri, settings.render)
    except Exception as exc:
        return FilePlan(uri, "unknown", error=_error(exc))
    reason = unprocessable_reason(source, detail, settings.tasks)
    if reason is not None:
        return FilePlan(uri, source.kind, error=_error(reason))
    try:
        if source.kind == "video":
            return _plan_video(source, settings, counter, helper)
        return _plan_pages(source, settings, counter, helper)
    except Exception as exc:  # hostile or broken: what the run would write as a failure
        return FilePlan(uri, source.kind, error=_error(exc))


def _sniff(uri: str, render: RenderConfig) -> tuple[SourceFile, str]:
    """The file's kind from its first bytes (its size from the file system). Hashing the
    whole file, as ingest does, is needed only to look a password up by doc_id."""
    from apache_beam.io.filesystems import FileSystems

    if render.passwords_file:
        from vlbeam.transforms.ingest import identify_file

        return identify_file(uri)
    with FileSystems.open(uri, compression_type="uncompressed") as handle:
        head = handle.read(HEAD_BYTES)
    size = FileSystems.match([uri])[0].metadata_list[0].size_in_bytes
    kind, detail = sniff_kind(head)
    return SourceFile(uri=uri, doc_id=None, kind=kind, size_bytes=size), detail


def _plan_pages(
    source: SourceFile, settings: PlanSettings, counter: TokenCounter, helper: HelperProcess
) -> FilePlan:
    password = None
    if source.kind == "pdf":
        password = pdf_password(settings.render, source.uri, source.doc_id)
    sizes = helper.rendered_sizes(
        source.doc_id or source.uri, source.uri, source.kind, password, settings.render
    )
    tokens, refused = [], 0
    for size in sizes:
        if isinstance(size[0], str):  # the run's render refuses this page
            tokens.append(0)
            refused += 1
        else:
            tokens.append(counter.page_tokens([size], settings.ocr_prompt))
    return FilePlan(source.uri, source.kind, pages=len(sizes), page_tokens=tuple(tokens),
                    unit_failures=refused)  # fmt: skip


def _plan_video(
    source: SourceFile, settings: PlanSettings, counter: TokenCounter, helper: HelperProcess
) -> FilePlan:
    info = helper.probe_video(source.uri, max(settings.video.timeout_s, OPEN_TIMEOUT_S))
    windows = plan_windows(source, info.duration_s, settings.video)
    width, height = frame_size(info.width, info.height, settings.video.sampling.max_pixels)
    frames, tokens = [], []
    for window in windows:
        times = target_times(window.start_s, window.end_s, settings.video.sampling)
        frames.append(len(times))
        tokens.append(counter.window_tokens(times, width, height, settings.grounding_prompt))
    return FilePlan(
        source.uri,
        "video",
        video_seconds=info.duration_s,
        windows=len(windows),
        frames=sum(frames),
        window_tokens=tuple(tokens),
        window_frames=tuple(frames),
    )
