"""Split videos into overlapping time windows of timestamped frames.

Each window is its own element (reshuffled), so one long video spreads over every
worker. Probing and decoding run in the same helper process as page rendering
(`HelperProcess`), with a time bound per window; the file is read by the helper
straight from its URI and only JPEG frames come back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.elements import Failure, SourceFile, VideoWindow, WindowFrames, WindowRef
from vlbeam.transforms.dead_letter import FAILURES_TAG, NAMESPACE, count_failure
from vlbeam.transforms.helper_dofn import HelperDoFn
from vlbeam.transforms.media.video_decode import EmptyWindow, SamplingConfig

logger = logging.getLogger(__name__)

FACTS_TAG = "facts"


@dataclass(frozen=True)
class VideoConfig:
    window_s: float = 60.0
    overlap_s: float = 4.0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    timeout_s: float = 300.0
    max_memory_mb: int = 4096

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


class _PlanWindows(HelperDoFn):
    def process(self, source: SourceFile):
        try:
            info = self._worker.probe_video(source.uri, self._cfg.timeout_s)
        except Exception as exc:
            failure = Failure.from_exception(
                exc, source_uri=source.uri, doc_id=source.doc_id, stage="split"
            )
            count_failure(failure)
            yield beam.pvalue.TaggedOutput(FAILURES_TAG, failure)
            return
        windows = plan_windows(source, info.duration_s, self._cfg)
        facts = {"duration_s": info.duration_s, "num_units": len(windows)}
        yield beam.pvalue.TaggedOutput(FACTS_TAG, (source.uri, facts))
        yield from windows


class _SampleWindows(HelperDoFn):
    def __init__(self, cfg: VideoConfig) -> None:
        super().__init__(cfg)
        self._frames = Metrics.counter(NAMESPACE, "video_frames")
        self._windows = Metrics.counter(NAMESPACE, "video_windows_decoded")

    def process(self, window: VideoWindow):
        source = window.source
        try:
            frames, errors = self._worker.sample_video(
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
                failure = Failure(failure.source_uri, failure.doc_id, failure.stage,
                                  failure.error_type, f"{window.describe()}: {failure.message}",
                                  failure.unit)  # fmt: skip
            count_failure(failure)
            yield beam.pvalue.TaggedOutput(FAILURES_TAG, failure)
            return
        if errors:
            logger.warning("%s of %s: skipped %d undecodable packets", window.describe(),
                           source.uri, errors)  # fmt: skip
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
        yield WindowFrames(ref=ref, frames=tuple(f.image for f in frames))


class SplitVideo(beam.PTransform):
    """SourceFile (video) → dict of `windows` (WindowFrames), `facts` ((uri, {duration_s,
    num_units})) and `failures`."""

    def __init__(self, cfg: VideoConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, sources):
        planned = sources | "PlanWindows" >> beam.ParDo(_PlanWindows(self._cfg)).with_outputs(
            FAILURES_TAG, FACTS_TAG, main="windows"
        )
        sampled = (
            planned.windows
            | "SpreadWindows" >> beam.Reshuffle()
            | "SampleFrames"
            >> beam.ParDo(_SampleWindows(self._cfg)).with_outputs(FAILURES_TAG, main="windows")
        )
        failures = (planned[FAILURES_TAG], sampled[FAILURES_TAG]) | (
            "VideoSplitFailures" >> beam.Flatten()
        )
        return {"windows": sampled.windows, "facts": planned[FACTS_TAG], "failures": failures}
