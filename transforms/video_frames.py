"""A video through the worker's helper process: probed (to plan its windows) and a window's
frames decoded.

Planning probes a video and cuts it into overlapping `VideoWindow`s
(`media.work_units.plan_windows`), which are shuffled so one long video spreads over every
worker. Decoding happens later, in the stage that feeds the model
(`transforms/inference.py`), so frames never cross a shuffle. Probing and decoding run in the
worker's helper process with a time bound per window; the helper reads the file straight from
its URI and only JPEG frames come back.
"""

from __future__ import annotations

import dataclasses
import logging

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
from vlbeam.transforms.dead_letter import NAMESPACE
from vlbeam.transforms.media.helper_process import HelperProcess
from vlbeam.transforms.media.work_units import VideoConfig, plan_video_windows

logger = logging.getLogger(__name__)


def plan_video(
    helper: HelperProcess, source: SourceFile, cfg: VideoConfig
) -> tuple[DocumentFacts, list[VideoWindow]]:
    """Probe a video (duration, also for files whose header has none) and cut it into windows
    (the coarse pass's, under coarse-to-fine)."""
    info = helper.probe_video(source.uri, cfg.timeout_s)
    facts = DocumentFacts(source.uri, duration_s=info.duration_s, meta=source.meta)
    return facts, plan_video_windows(source, info.duration_s, cfg)


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
                source.uri,
                window.start_s,
                window.end_s,
                self._cfg.sampling_for(window.grounding_pass.name),
                self._cfg.timeout_s,
            )
            if not frames:
                raise EmptyWindow(
                    f"no frame could be decoded in {window.describe()}"
                    + (f" ({errors} packets failed to decode)" if errors else "")
                )
        except Exception as exc:
            failure = source.failure(exc, "decode", window.index)
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
            grounding_pass=window.grounding_pass,
            meta=source.meta,
        )
        return WindowFrames(ref=ref, frames=tuple(f.image for f in frames))
