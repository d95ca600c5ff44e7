"""How inputs are cut into work units, the small descriptors that are shuffled: a document
into page ranges, a video into overlapping time windows. Pure (no Beam, no helper process), so
the report can re-plan a run's windows without importing Beam.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlbeam.schemas.elements import PageRange, SourceFile, VideoWindow
from vlbeam.schemas.flags import flag, same_flag
from vlbeam.transforms.media.video_decode import SamplingConfig


def page_ranges(source: SourceFile, num_pages: int, pages_per_task: int) -> list[PageRange]:
    """Cut pages 1..num_pages into consecutive ranges of at most `pages_per_task`."""
    return [
        PageRange(source, first, min(first + pages_per_task - 1, num_pages), num_pages)
        for first in range(1, num_pages + 1, pages_per_task)
    ]


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


def plan_windows(source: SourceFile, duration_s: float, cfg: VideoConfig) -> list[VideoWindow]:
    """Windows of `window_s` starting every `window_s - overlap_s` seconds; the last one
    ends at the video's end. A tail already inside the previous window is not repeated."""
    step = cfg.window_s - cfg.overlap_s
    windows, start, index = [], 0.0, 0
    while start < duration_s:
        end = min(start + cfg.window_s, duration_s)
        windows.append(VideoWindow(source, index, round(start, 6), round(end, 6), duration_s))
        if end >= duration_s:
            break
        start, index = start + step, index + 1
    return windows
