"""How inputs are cut into work units, the small descriptors that are shuffled: a document
into page ranges, a video into overlapping time windows. Pure (no Beam, no helper process), so
the report can re-plan a run's windows without importing Beam.

With `--grounding-strategy coarse-to-fine` a video is first cut into long coarse windows
(`plan_coarse_windows`); the dense windows of the refine pass are planned from the coarse
answers' candidate spans (`plan_refine_windows`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from vlbeam.schemas.elements import PageRange, SourceFile, VideoWindow, WindowPass
from vlbeam.schemas.flags import flag, same_flag
from vlbeam.transforms.media.video_decode import SamplingConfig, target_times

STRATEGIES = ("dense", "coarse-to-fine")
EPS_S = 1e-6


def page_ranges(source: SourceFile, num_pages: int, pages_per_task: int) -> list[PageRange]:
    """Cut pages 1..num_pages into consecutive ranges of at most `pages_per_task`."""
    return [
        PageRange(source, first, min(first + pages_per_task - 1, num_pages), num_pages)
        for first in range(1, num_pages + 1, pages_per_task)
    ]


@dataclass(frozen=True)
class GroundingStrategy:
    """How query grounding spends frames: `dense` sends every window at --fps; `coarse-to-fine`
    first asks long, sparsely sampled windows where each query may happen, then sends dense
    windows only around those candidates."""

    name: str = flag(
        "dense",
        name="grounding_strategy",
        choices=STRATEGIES,
        help="dense: every window at --fps; coarse-to-fine (with queries): a sparse coarse "
        "pass finds candidate spans, dense windows are sent only around them (the event "
        "timeline, without queries, stays dense)",
    )
    coarse_window_s: float = flag(
        600.0, name="coarse_window_seconds", help="length of the coarse pass's windows"
    )
    coarse_fps: float = flag(
        0.25,
        help="frames per second of the coarse pass (--sampling keyframes: keyframes, at most "
        "this dense); an event shorter than its interval can fall between two coarse frames",
    )
    refine_margin_s: float | None = flag(
        None,
        help="seconds added on each side of a coarse candidate before it is refined; at least "
        "one coarse sampling interval (default: two)",
    )

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"--grounding-strategy must be one of {STRATEGIES}")
        if not self.coarse_window_s > 0 or not 0 < self.coarse_fps <= 60:
            raise ValueError("need --coarse-window-seconds > 0 and 0 < --coarse-fps <= 60")
        if self.refine_margin_s is not None and not self.refine_margin_s >= 0:
            raise ValueError("--refine-margin-s must not be negative")

    @property
    def coarse_to_fine(self) -> bool:
        return self.name == "coarse-to-fine"


@dataclass(frozen=True)
class VideoConfig:
    window_s: float = flag(
        60.0, name="window_seconds", help="length of the video windows the model sees"
    )
    overlap_s: float = flag(
        4.0,
        name="window_overlap_seconds",
        help="overlap between consecutive windows (events on a boundary stay whole)",
    )
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    strategy: GroundingStrategy = field(default_factory=GroundingStrategy)
    timeout_s: float = flag(
        300.0,
        name="decode_timeout_s",
        help="time bound for probing a video or decoding one window",
    )
    max_memory_mb: int = same_flag("render_memory_mb", 4096)

    def __post_init__(self) -> None:
        if not 0 <= self.overlap_s < self.window_s:
            raise ValueError("need 0 <= window overlap < window length")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.strategy.coarse_to_fine:
            if self.overlap_s >= self.strategy.coarse_window_s:
                raise ValueError("need --window-overlap-seconds < --coarse-window-seconds")
            margin, interval = self.strategy.refine_margin_s, self.coarse_interval_s
            if margin is not None and margin < interval - EPS_S:
                raise ValueError(
                    f"--refine-margin-s {margin:g} is less than one coarse sampling interval "
                    f"({interval:g} s: --coarse-fps {self.strategy.coarse_fps:g}, at most "
                    f"--max-frames-per-window {self.sampling.max_frames} per "
                    f"{self.strategy.coarse_window_s:g} s window): an event seen only by one "
                    "coarse frame could begin or end outside the refined span"
                )

    @property
    def coarse_sampling(self) -> SamplingConfig:
        """The coarse pass's sampling: --coarse-fps, in --sampling's mode."""
        return dataclasses.replace(self.sampling, fps=self.strategy.coarse_fps)

    @property
    def refine_sampling(self) -> SamplingConfig:
        """The refine pass's sampling: every frame at --fps (under coarse-to-fine,
        --sampling keyframes is the coarse pass's)."""
        return dataclasses.replace(self.sampling, mode="frames")

    def sampling_for(self, grounding_pass: str) -> SamplingConfig:
        if grounding_pass == "coarse":
            return self.coarse_sampling
        if grounding_pass == "refine":
            return self.refine_sampling
        return self.sampling

    @property
    def coarse_interval_s(self) -> float:
        """The longest time between two coarse frames of a window (the sampling is thinned
        evenly to --max-frames-per-window); in keyframe mode the file's keyframe interval
        may be longer."""
        fps, window_s = self.strategy.coarse_fps, self.strategy.coarse_window_s
        return max(1.0 / fps, window_s / self.sampling.max_frames)

    @property
    def refine_margin_s(self) -> float:
        margin = self.strategy.refine_margin_s
        return 2 * self.coarse_interval_s if margin is None else margin

    def dense(self) -> VideoConfig:
        """This config with the dense strategy (the event timeline is always dense)."""
        return dataclasses.replace(self, strategy=dataclasses.replace(self.strategy, name="dense"))


def _cut(start_s: float, end_s: float, window_s: float, overlap_s: float):
    """(start, end) of windows of `window_s` over [start_s, end_s), starting every
    `window_s - overlap_s` seconds; the last one ends at `end_s`. A tail already inside the
    previous window is not repeated."""
    step, start = window_s - overlap_s, start_s
    while start < end_s:
        end = min(start + window_s, end_s)
        yield round(start, 6), round(end, 6)
        if end >= end_s:
            break
        start += step


def plan_windows(source: SourceFile, duration_s: float, cfg: VideoConfig) -> list[VideoWindow]:
    """Windows of `window_s` starting every `window_s - overlap_s` seconds; the last one
    ends at the video's end. A tail already inside the previous window is not repeated."""
    return [
        VideoWindow(source, index, start, end, duration_s)
        for index, (start, end) in enumerate(_cut(0.0, duration_s, cfg.window_s, cfg.overlap_s))
    ]


def plan_coarse_windows(
    source: SourceFile, duration_s: float, cfg: VideoConfig
) -> list[VideoWindow]:
    """The coarse pass: windows of --coarse-window-seconds, overlapping like the dense ones."""
    cuts = _cut(0.0, duration_s, cfg.strategy.coarse_window_s, cfg.overlap_s)
    coarse = WindowPass("coarse")
    return [
        VideoWindow(source, index, start, end, duration_s, coarse)
        for index, (start, end) in enumerate(cuts)
    ]


def plan_video_windows(
    source: SourceFile, duration_s: float, cfg: VideoConfig
) -> list[VideoWindow]:
    """The windows a video's grounding starts with: every dense window, or the coarse pass."""
    if cfg.strategy.coarse_to_fine:
        return plan_coarse_windows(source, duration_s, cfg)
    return plan_windows(source, duration_s, cfg)


def dense_frames(duration_s: float, cfg: VideoConfig) -> int:
    """How many frames the dense strategy would send for a video of this length (its
    sampling instants: one frame each on a video whose frame rate is at least --fps)."""
    return sum(
        len(target_times(start, end, cfg.sampling))
        for start, end in _cut(0.0, duration_s, cfg.window_s, cfg.overlap_s)
    )


@dataclass(frozen=True)
class Candidate:
    """A span the coarse pass says may match query `query_number` (1-based)."""

    query_number: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class CoarseAnswer:
    """What one coarse window said: its candidates, or None when its answer could not be
    read (or it has none: the call failed), in which case the whole window is refined."""

    index: int
    start_s: float
    end_s: float
    candidates: tuple[Candidate, ...] | None


@dataclass
class _Region:
    start_s: float
    end_s: float
    coarse: set[int]
    queries: set[int] | None  # None: every query


def _on_grid(start_s: float, end_s: float, step_s: float, duration_s: float):
    """[start, end) clamped to the video and widened to whole dense frame steps, so a refine
    window samples the instants a dense window would (times from 0 s, every 1/fps)."""
    start = max(0.0, math.floor(max(0.0, start_s) / step_s + 1e-6) * step_s)
    end = min(duration_s, math.ceil(min(end_s, duration_s) / step_s - 1e-6) * step_s)
    return round(start, 6), round(end, 6)


def plan_refine_windows(
    source: SourceFile,
    duration_s: float,
    answers: Sequence[CoarseAnswer],
    cfg: VideoConfig,
) -> list[VideoWindow]:
    """The refine pass's dense windows from the coarse pass's answers for one video.

    Each candidate span is widened by the refine margin on each side (the event may begin
    or end anywhere between the coarse frame that saw it and the one before or after);
    a coarse answer that could not be read (None) refines its whole coarse window, never
    nothing. Spans are clamped to the video's ends and put on the dense sampling grid;
    overlapping or touching spans merge (so candidates in the overlap of two coarse windows,
    or near each other, are refined once), each merged span remembering the coarse windows
    and queries that led to it. A merged span is then cut into windows of --window-seconds
    overlapping by --window-overlap-seconds, as dense windows are. Indexes count from 0 in
    time order. No candidate anywhere: no window.
    """
    margin, step = cfg.refine_margin_s, 1.0 / cfg.sampling.fps
    regions: list[_Region] = []
    for answer in answers:
        if answer.candidates is None:
            spans = [(answer.start_s, answer.end_s, None)]
        else:
            spans = [
                (min(c.start_s, c.end_s) - margin, max(c.start_s, c.end_s) + margin,
                 {c.query_number})
                for c in answer.candidates
            ]  # fmt: skip
        for lo, hi, queries in spans:
            start, end = _on_grid(lo, hi, step, duration_s)
            if end - start > EPS_S:
                regions.append(_Region(start, end, {answer.index}, queries))
    merged: list[_Region] = []
    for region in sorted(regions, key=lambda r: (r.start_s, r.end_s)):
        last = merged[-1] if merged else None
        if last is not None and region.start_s <= last.end_s + EPS_S:
            last.end_s = max(last.end_s, region.end_s)
            last.coarse |= region.coarse
            last.queries = (
                None if last.queries is None or region.queries is None
                else last.queries | region.queries
            )  # fmt: skip
        else:
            merged.append(region)
    windows: list[VideoWindow] = []
    for region in merged:
        grounding_pass = WindowPass(
            "refine",
            tuple(sorted(region.coarse)),
            () if region.queries is None else tuple(sorted(region.queries)),
        )
        for start, end in _cut(region.start_s, region.end_s, cfg.window_s, cfg.overlap_s):
            windows.append(
                VideoWindow(source, len(windows), start, end, duration_s, grounding_pass)
            )
    return windows
