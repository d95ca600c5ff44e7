"""Pure functions that probe videos and sample timestamped frames from a time window (PyAV).

Every frame carries its true presentation time in seconds from the start of the
video: (pts - stream start) * time base, so variable-frame-rate files are exact.
Decoding seeks once per window (to the keyframe before it) and then decodes
forward, converting only the frames it keeps; nothing holds more than one
decoded frame, so memory does not grow with the video's length.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass

from vlbeam.schemas.errors import VlbeamError

logger = logging.getLogger(__name__)


class InvalidVideo(VlbeamError):
    pass


class NoVideoStream(VlbeamError):
    pass


class EmptyWindow(VlbeamError):
    pass


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    width: int  # as displayed (rotation applied)
    height: int
    rotation: int  # degrees counter-clockwise to apply to decoded frames (0/90/180/270)
    avg_fps: float | None
    variable_frame_rate: bool
    codec: str


@dataclass(frozen=True)
class SampledFrame:
    time_s: float
    image: bytes  # JPEG
    width: int
    height: int


@dataclass(frozen=True)
class SamplingConfig:
    fps: float = 2.0
    max_frames: int = 128
    max_pixels: int = 448 * 448
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 60 or self.max_frames < 2 or self.max_pixels < 32 * 32:
            raise ValueError("need 0 < fps <= 60, max_frames >= 2, max_pixels >= 1024")


def open_container(source):
    import av

    try:
        return av.open(source, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InvalidVideo(f"cannot open as a video: {exc}") from None


def video_stream(container):
    """The main video stream, ignoring cover art (attached pictures)."""
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            if stream.thread_type != "AUTO":
                # frame threading: ~1.4x faster decoding (fails once the codec is open)
                with contextlib.suppress(RuntimeError):
                    stream.thread_type = "AUTO"
            return stream
    if container.streams.video:
        raise NoVideoStream("the only video stream is an attached picture (cover art)")
    raise NoVideoStream("file has no video stream")


def _start_pts(stream) -> int:
    return stream.start_time if stream.start_time is not None else 0


def probe(container) -> VideoInfo:
    """Duration, display size, rotation, frame rate of the main video stream.

    A container without a duration (e.g. MediaRecorder WebM) is measured by one
    demux pass (no decoding).
    """
    stream = video_stream(container)
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    vfr = False
    if duration is None or duration <= 0:
        duration = _demux_duration(container, stream)
    if duration is None or duration <= 0:
        raise InvalidVideo("video has no decodable duration")
    rate = stream.average_rate or stream.guessed_rate
    base = stream.base_rate
    if rate and base and abs(float(rate) - float(base)) > 0.01 * float(base):
        vfr = True
    rotation = _rotation(container, stream)
    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        duration_s=duration,
        width=width,
        height=height,
        rotation=rotation,
        avg_fps=float(rate) if rate else None,
        variable_frame_rate=vfr,
        codec=stream.codec_context.name,
    )


def _demux_duration(container, stream) -> float | None:
    last = None
    start = _start_pts(stream)
    for packet in container.demux(stream):
        if packet.pts is not None:
            end = packet.pts + (packet.duration or 0)
            last = end if last is None else max(last, end)
    container.seek(0)
    return None if last is None else float((last - start) * stream.time_base)


def _rotation(container, stream) -> int:
    """Counter-clockwise quarter turns (in degrees) that make decoded frames upright."""
    angle = None
    try:
        for frame in container.decode(stream):
            angle = frame.rotation
            break
    except Exception:
        angle = None
    container.seek(0)
    if not angle:
        return 0
    return round(angle / 90.0) % 4 * 90


def target_times(start_s: float, end_s: float, cfg: SamplingConfig) -> list[float]:
    """Sampling instants in [start, end): every 1/fps, thinned evenly to max_frames."""
    step = 1.0 / cfg.fps
    span = max(end_s - start_s, 0.0)
    count = max(1, math.ceil(span / step - 1e-9))
    if count > cfg.max_frames:
        count, step = cfg.max_frames, span / cfg.max_frames
    return [start_s + i * step for i in range(count)]


def frame_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Displayed frame size scaled into the pixel budget (never up), even dimensions."""
    scale = min(1.0, math.sqrt(max_pixels / float(width * height)))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def sample_window(
    container, info: VideoInfo, start_s: float, end_s: float, cfg: SamplingConfig
) -> tuple[list[SampledFrame], int]:
    """Frames for the window [start_s, end_s): for each sampling instant, the first
    frame presented at or after it (each frame kept once). Returns (frames, decode
    errors skipped)."""
    import av
    import numpy as np
    from PIL import Image

    stream = video_stream(container)
    time_base, start_pts = stream.time_base, _start_pts(stream)
    try:  # to the keyframe at or before the window (also rewinds a reused container)
        container.seek(start_pts + int(start_s / time_base), stream=stream, backward=True)
    except av.error.FFmpegError:
        if start_s > 0:
            raise
    targets = target_times(start_s, end_s, cfg)
    out_w, out_h = frame_size(info.width, info.height, cfg.max_pixels)
    if info.rotation in (90, 270):  # convert in the stored orientation, then turn
        conv_w, conv_h = out_h, out_w
    else:
        conv_w, conv_h = out_w, out_h
    frames: list[SampledFrame] = []
    errors, k, last_time = 0, 0, -math.inf
    codec = stream.codec_context
    codec.skip_frame = "DEFAULT"  # the container is reused across windows
    skipping = False
    for packet in container.demux(stream):
        # A frame presented before the next sampling instant is never kept: let the decoder
        # drop it when no other frame references it (NONREF), so kept frames decode exactly
        # as before. With frame threading `k` lags, which only means more decoding.
        skip = (
            packet.pts is not None
            and k < len(targets)
            and float((packet.pts - start_pts) * time_base) + 1e-6 < targets[k]
        )
        if skip != skipping:
            codec.skip_frame = "NONREF" if skip else "DEFAULT"
            skipping = skip
        try:
            decoded = packet.decode()
        except av.error.FFmpegError:
            errors += 1
            continue
        for frame in decoded:
            if frame.pts is None:
                continue
            t = float((frame.pts - start_pts) * time_base)
            if t <= last_time or t < start_s - 1e-6:
                continue  # before the window, or out of order (non-monotonic timestamps)
            if t >= end_s:
                return frames, errors
            if k < len(targets) and t + 1e-6 >= targets[k]:
                array = frame.to_ndarray(width=conv_w, height=conv_h, format="rgb24")
                if info.rotation:
                    array = np.ascontiguousarray(np.rot90(array, k=info.rotation // 90))
                buf = io.BytesIO()
                Image.fromarray(array).save(buf, format="JPEG", quality=cfg.jpeg_quality)
                frames.append(SampledFrame(t, buf.getvalue(), array.shape[1], array.shape[0]))
                last_time = t
                while k < len(targets) and targets[k] <= t + 1e-6:
                    k += 1
                if k >= len(targets):
                    return frames, errors
    return frames, errors
