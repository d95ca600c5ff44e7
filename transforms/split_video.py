"""Videos → overlapping time windows (small work descriptors), and a window → its frames.

Planning probes a video and cuts it into `VideoWindow`s, which are shuffled so one long video
spreads over every worker. Decoding happens later, in the stage that feeds the model
(`transforms/inference.py`), so frames never cross a shuffle. Probing and decoding run in the
worker's helper process with a time bound per window; the helper reads the file straight from
its URI and only JPEG frames come back.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from apache_beam.metrics import Metrics

from vlbeam.schemas.elements import (
    DocumentFacts,
    Failure,
    SourceFile,
    VideoWindow,
    WindowFrames,
    WindowRef,
)
from vlbeam.schemas.errors import EmptyWindow
from vlbeam.schemas.flags import flag, same_flag
from vlbeam.transforms.dead_letter import NAMESPACE
from vlbeam.transforms.media.helper_process import HelperProcess
from vlbeam.transforms.media.video_decode import SamplingConfig

logger = logging.getLogger(__name__)


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


def plan_video(
    helper: HelperProcess, source: SourceFile, cfg: VideoConfig
) -> tuple[DocumentFacts, list[VideoWindow]]:
    """Probe a video (duration, also for files whose header has none) and cut it into windows."""
    info = helper.probe_video(source.uri, cfg.timeout_s)
    return DocumentFacts(source.uri, duration_s=info.duration_s), plan_windows(
        source, info.duration_s, cfg
    )


class WindowSampler:
    """Decodes a window's frames through a helper process (time-bounded). With
    `counted=False` it doesn't count `video_windows_decoded`/`video_frames` (the caller does:
    a helper-pool thread can't update Beam metrics)."""

    def __init__(self, cfg: VideoConfig, counted: bool = True) -> None:
        self._cfg = cfg
        self._counted = counted
        self._frames = Metrics.counter(NAMESPACE, "video_frames")
        self._windows = Metrics.counter(NAMESPACE, "video_windows_decoded")

    def frames(self, helper: HelperProcess, window: VideoWindow) -> WindowFrames | Failure:
        """The window's sampled frames with their true times, or a `decode` failure that
        names the window and its time range."""
        source = window.source
        try:
            frames, errors = helper.sample_video(
                source.uri, window.start_s, window.end_s, self._cfg.sampling, self._cfg.timeout_s
            )
            if not frames:
                raise EmptyWindow(
                    f"no frame could be decoded in {window.describe()}"
                    + (f" ({errors} packets failed to decode)" if errors else "")
                )
        except Exception as exc:
            failure = Failure.from_exception(
                exc, source_uri=source.uri, doc_id=source.doc_id, stage="decode",
                unit=window.index,
            )  # fmt: skip
            if window.describe() not in failure.message:
                failure = dataclasses.replace(
                    failure, message=f"{window.describe()}: {failure.message}"
                )
            return failure
        if errors:
            logger.warning("%s of %s: skipped %d undecodable packets", window.describe(),
                           source.uri, errors)  # fmt: skip
        if self._counted:
            self._windows.inc()
            self._frames.inc(len(frames))
        ref = WindowRef(
            doc_id=source.doc_id,
            source_uri=source.uri,
            window_index=window.index,
            start_s=window.start_s,
            end_s=window.end_s,
            frame_times_s=tuple(round(f.time_s, 6) for f in frames),
        )
        return WindowFrames(ref=ref, frames=tuple(f.image for f in frames))
