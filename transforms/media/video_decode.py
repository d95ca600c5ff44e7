"""Pure functions that probe videos and sample timestamped frames from a time window (PyAV).

Times. Every frame carries its true presentation time in seconds from the video's first
frame: (pts - pts of the first frame presented) * time base, so variable-frame-rate files
are exact and a stream that starts late (MPEG-TS at 11.4 s, an MP4 edit list) still starts
at 0 s. The first window starts at that first frame.

Coverage. For every sampling instant of a window, the frame kept is the first frame
presented at or after the instant (each frame once). That needs decoding to start at a
keyframe at or before the window's first instant, and a container seek does not promise
it: MPEG-TS/PS seek to a byte position near the time (landing after the keyframe), and a
Matroska file with sparse or wrong cues can land on the next keyframe. So every seek is
checked where it landed: the first keyframe packet after it must be presented at or before
the first instant, and so must the first decoded frame; if not, the seek goes further back
(1, 2, 4, ... s) and finally to the video's start. The check reads packets only (no
decoding), so it costs a demux of at most a keyframe interval per retry. MPEG program
streams store a time only every few packets and the demuxer derives the others, from
wherever reading began: after a seek the first packets' times differ from a sequential
read's. For them one sequential demux (no decoding, once per open file) records every
packet's true times; where a seek landed is found by packet sizes, and the true times are
put back on the packets before decoding.

Cost. One checked seek per window, then decoding forward, converting only the frames kept;
frames presented before the next instant that no other frame references are dropped by the
decoder (`skip_frame=NONREF`). Nothing holds more than one decoded frame, so memory does not
grow with the video's length.

Keyframe mode (`SamplingConfig(mode="keyframes")`): for each instant the first *keyframe*
(a packet the container marks as a random-access point) presented at or after it is kept,
so `fps` bounds the density from above and the real spacing is the file's keyframe
interval, each frame with its true time. Only the keyframes kept are decoded, each on its
own; everything else is only demuxed, so it costs a small fraction of decoding every frame.
A window with no keyframe in it gets its first instant's frame, decoded in full.

Why one file of over 500 lines: probing, the checked seek, the packet index and the two decode
loops are one subject (exact coverage) and share private state (where a seek landed, the
packet index, the time origin); split apart, each piece would need the others' internals.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from vlbeam.schemas.errors import InvalidVideo, NoVideoStream
from vlbeam.schemas.flags import flag

logger = logging.getLogger(__name__)

SAMPLING_MODES = ("frames", "keyframes")
EPS_S = 1e-6  # time comparisons: a frame "at" an instant may differ by rounding only
MAX_BACKOFF_ATTEMPTS = 24  # 1, 2, 4, ... s back: past any real video's length, then the start
# Containers whose demuxer derives most timestamps (MPEG program streams store a time only
# every few packets): after a seek the derived times differ from those of a sequential read
# for the first packets, so their true times come from an index of one sequential read.
INDEXED_FORMATS = frozenset({"mpeg", "mpegvideo"})
SIGNATURE_PACKETS = 8  # packet sizes that identify where a seek landed in that index
NO_TS = -(2**63)


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float  # from the first frame presented to the end of the stream
    width: int  # as displayed (rotation applied)
    height: int
    rotation: int  # degrees counter-clockwise to apply to decoded frames (0/90/180/270)
    # pts (stream time base) of the first frame presented: time 0 of every frame time.
    # None: the stream's start time.
    origin_pts: int | None = None


@dataclass(frozen=True)
class SampledFrame:
    time_s: float
    image: bytes  # JPEG
    width: int
    height: int


@dataclass(frozen=True)
class SamplingConfig:
    fps: float = flag(2.0, help="frames sampled per second")
    max_frames: int = flag(128, name="max_frames_per_window")
    max_pixels: int = flag(448 * 448, name="max_pixels_per_frame")
    mode: str = flag(
        "frames",
        name="sampling",
        choices=SAMPLING_MODES,
        help="frames: the first frame at or after each instant, every 1/fps; keyframes: the "
        "first keyframe at or after each instant, decoding keyframes only (a cheap pass over "
        "very long videos: spacing is the file's keyframe interval, --fps an upper bound)",
    )
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 60 or self.max_frames < 2 or self.max_pixels < 32 * 32:
            raise ValueError("need 0 < fps <= 60, max_frames >= 2, max_pixels >= 1024")
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {self.mode!r}")


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


def set_decode_threads(container, threads: int) -> None:
    """Decode the main video stream with `threads` threads (0: FFmpeg's choice, about one
    per core). Frame threading costs ~20 % more CPU per frame than one thread (measured on the
    1080p H.264 of bench_feed.py: 2.99 s vs 2.51 s for 1,800 frames) for ~1.4x the speed, so a
    pool with one helper per core decodes single-threaded in each. Before the first decode."""
    stream = video_stream(container)
    if threads:
        with contextlib.suppress(RuntimeError):  # the codec is already open
            stream.thread_count = threads


def _start_pts(stream) -> int:
    return stream.start_time if stream.start_time is not None else 0


def _origin_pts(info: VideoInfo, stream) -> int:
    return info.origin_pts if info.origin_pts is not None else _start_pts(stream)


def probe(container) -> VideoInfo:
    """Duration, display size, rotation, frame rate and time origin of the main video stream.

    The first frame is decoded (for its rotation and its time, the origin). A container
    without a duration (e.g. MediaRecorder WebM) is measured by one demux pass (no
    decoding).
    """
    stream = video_stream(container)
    rotation, origin = _first_frame(container, stream)
    start = _start_pts(stream)
    if origin is None:
        origin = start
    time_base = stream.time_base
    end = None  # seconds on the stream's clock
    if stream.duration and time_base:
        end = float((start + stream.duration) * time_base)
    elif container.duration:
        container_start = container.start_time
        if container_start is None:
            container_start = float(start * time_base) * 1_000_000 if time_base else 0
        end = (container_start + container.duration) / 1_000_000
    if end is None or end <= float(origin * time_base) or container.format.name in INDEXED_FORMATS:
        # no duration, or one estimated from derived times (MPEG-PS): measure the packets
        end = _demux_end(container, stream) or end
    else:
        # A stated end can fall before the last frames (an MP4 edit list that leaves out
        # the B-frame delay): the packets of the last seconds may extend it, never shorten.
        end = max(end, _tail_end(container, stream, end) or end)
    duration = None if end is None else round(end - float(origin * time_base), 6)
    if duration is None or duration <= 0:
        raise InvalidVideo("video has no decodable duration")
    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        duration_s=duration,
        width=width,
        height=height,
        rotation=rotation,
        origin_pts=origin,
    )


def _demux_end(container, stream) -> float | None:
    """End of the last packet, in seconds on the stream's clock (one demux pass)."""
    last = None
    for packet in container.demux(stream):
        if packet.pts is not None:
            end = packet.pts + (packet.duration or 0)
            last = end if last is None else max(last, end)
    container.seek(0)
    return None if last is None else float(last * stream.time_base)


TAIL_S = 5.0
TAIL_PACKETS = 3000


def _tail_end(container, stream, end_s: float) -> float | None:
    """End of the last packet, in seconds on the stream's clock, reading from a seek to a
    few seconds before `end_s` (None if that does not reach the end of the stream)."""
    import av

    try:
        container.seek(int((end_s - TAIL_S) / stream.time_base), stream=stream, backward=True)
    except av.error.FFmpegError:
        return None
    last = None
    try:
        for count, packet in enumerate(container.demux(stream)):
            if count >= TAIL_PACKETS:
                last = None
                break
            if packet.pts is not None and packet.size:
                end = packet.pts + (packet.duration or 0)
                last = end if last is None else max(last, end)
    except av.error.FFmpegError:
        last = None
    container.seek(0)
    return None if last is None else float(last * stream.time_base)


def _first_frame(container, stream) -> tuple[int, int | None]:
    """Rotation (counter-clockwise quarter turns, in degrees, that make decoded frames
    upright) and pts of the first frame the decoder presents."""
    angle, pts = None, None
    try:
        for frame in container.decode(stream):
            angle, pts = frame.rotation, frame.pts
            break
    except Exception:
        angle = None
    container.seek(0)
    rotation = round(angle / 90.0) % 4 * 90 if angle else 0
    return rotation, pts


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
    """Frames for the window [start_s, end_s): for each sampling instant, the first frame
    (keyframe, in keyframe mode) presented at or after it, each frame kept once. Returns
    (frames, decode errors skipped)."""
    stream = video_stream(container)
    targets = target_times(start_s, end_s, cfg)
    keyframes = cfg.mode == "keyframes"
    window = (start_s, end_s)
    frames, errors = _sample(container, stream, info, targets, window, cfg, keyframes)
    if keyframes and not frames:
        # no keyframe presented in the window: its first instant's frame, decoded in full
        frames, errors = _sample(container, stream, info, targets[:1], window, cfg, False)
    return frames, errors


class _LandedLate(Exception):
    """Decoding after a seek began after the wanted instant."""


class _Misaligned(Exception):
    """The packets read no longer match the sequential index of the stream."""


def _sample(container, stream, info, targets, window, cfg, keyframes):
    index = None
    if container.format.name in INDEXED_FORMATS:
        index = _packet_index(container, stream)
        last = float((index.last - _origin_pts(info, stream)) * stream.time_base)
        if not index.sizes or last < targets[0] - EPS_S:
            return [], 0  # nothing is presented at or after the first instant
    back_s = 0.0
    for _attempt in range(MAX_BACKOFF_ATTEMPTS):
        from_start = targets[0] - back_s <= 0
        landed = _land(container, stream, info, targets[0] - back_s, targets[0], index)
        if landed is not None:
            decode = _decode_keyframes if keyframes else _decode
            try:
                return decode(landed, stream, info, targets, window, cfg, from_start)
            except _Misaligned:
                if index is None:
                    raise
                logger.warning("packets differ from the stream's index: using demuxer times")
                index = None
                continue
            except _LandedLate:
                pass
        if from_start:
            break
        back_s = max(1.0, 2 * back_s)
        logger.debug("seek for %.3f s landed late: going %.0f s further back", targets[0], back_s)
    return [], 0


_PAST_END: tuple = ()


def _land(container, stream, info, seek_s: float, target_s: float, index: _PacketIndex | None):
    """Seeks to `seek_s` (<= 0: the video's start) and returns the packets to decode from
    there, the first being a keyframe presented at or before `target_s`; no packets when
    the stream ends with none presented at or after `target_s`; None when the seek landed
    after `target_s` (or failed), to go further back."""
    import av

    time_base, origin = stream.time_base, _origin_pts(info, stream)
    if seek_s <= 0:
        _seek_start(container, stream, origin)
        packets = container.demux(stream)
        if index is None:
            return packets
        head = _take(packets, SIGNATURE_PACKETS)
        sizes = [p.size for p in head if p.size]
        at = index.align(sizes, range(min(64, len(index.sizes))), None)
        if at is None:  # not the index's first packets: the demuxer's own times
            return itertools.chain(head, packets)
        return _retimed(itertools.chain(head, packets), index, at)
    try:
        container.seek(origin + int(seek_s / time_base), stream=stream, backward=True)
    except av.error.FFmpegError:
        return None
    packets = container.demux(stream)
    seen_any, latest = False, -math.inf
    for packet in packets:
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None or not packet.size:
            continue  # the end-of-stream flush packet, or a packet without time
        t = float((pts - origin) * time_base)
        seen_any, latest = True, max(latest, t)
        if packet.is_keyframe:
            if index is not None:
                head = [packet, *_take(packets, SIGNATURE_PACKETS - 1)]
                at = index.align([p.size for p in head if p.size], index.keys, pts)
                if at is None:
                    return None
                t = float((index.time(at) - origin) * time_base)
                if t > target_s + EPS_S:
                    return None
                return _retimed(itertools.chain(head, packets), index, at)
            if t <= target_s + EPS_S:
                return itertools.chain((packet,), packets)
            return None  # the first keyframe after the seek is presented too late
        dts = packet.dts
        if dts is not None and float((dts - origin) * time_base) > target_s + 1.0:
            return None  # past the instant with no keyframe yet: every later one is later
    if seen_any and latest < target_s - EPS_S and index is None:
        return _PAST_END  # nothing is presented at or after the instant
    return None


def _seek_start(container, stream, origin: int) -> None:
    """Rewinds to the first packet: a time before it (or, where refused, its own)."""
    import av

    for pts in (origin - max(1, int(1 / stream.time_base)), origin):
        try:
            container.seek(pts, stream=stream, backward=True)
            return
        except av.error.FFmpegError:
            continue
    container.seek(0)


def _take(packets, count: int) -> list:
    """Up to `count` packets with data (the end-of-stream flush packet ends the list)."""
    head = []
    for packet in packets:
        head.append(packet)
        if not packet.size or len(head) >= count:
            break
    return head


class _PacketIndex:
    """Every packet of the video stream from one sequential read: true pts, dts and size,
    by position in the stream (NO_TS: none), and the positions of keyframes."""

    def __init__(self, container, stream) -> None:
        self.pts, self.dts, self.sizes = array("q"), array("q"), array("l")
        self.keys: list[int] = []
        _seek_start(container, stream, _start_pts(stream))
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.is_keyframe:
                self.keys.append(len(self.sizes))
            self.pts.append(NO_TS if packet.pts is None else packet.pts)
            self.dts.append(NO_TS if packet.dts is None else packet.dts)
            self.sizes.append(packet.size)
        self.last = max((self.time(at) for at in range(len(self.sizes))), default=NO_TS)

    def time(self, at: int) -> int:
        return self.pts[at] if self.pts[at] != NO_TS else self.dts[at]

    def align(self, sizes: list[int], candidates, near: int | None) -> int | None:
        """Position in the stream of packets with these sizes (the one nearest `near`)."""
        n = len(sizes)
        found = [j for j in candidates if list(self.sizes[j : j + n]) == sizes]
        if not found:
            return None
        if near is None:
            return found[0]
        return min(found, key=lambda j: abs(self.time(j) - near))


_INDEXES: OrderedDict[int, tuple[object, _PacketIndex]] = OrderedDict()


def _packet_index(container, stream) -> _PacketIndex:
    """The container's packet index, built once (the last two containers are kept)."""
    hit = _INDEXES.get(id(container))
    if hit is not None and hit[0] is container:
        return hit[1]
    index = _PacketIndex(container, stream)
    _INDEXES[id(container)] = (container, index)
    while len(_INDEXES) > 2:
        _INDEXES.popitem(last=False)
    return index


def _retimed(packets, index: _PacketIndex, at: int):
    """The packets with the true times of the index, from position `at` on."""
    for packet in packets:
        if packet.size:
            if at >= len(index.sizes) or packet.size != index.sizes[at]:
                raise _Misaligned
            pts, dts = index.pts[at], index.dts[at]
            packet.pts = None if pts == NO_TS else pts
            packet.dts = None if dts == NO_TS else dts
            at += 1
        yield packet


def _decode(packets, stream, info, targets, window, cfg, from_start):
    """Decodes forward from a checked landing; raises _LandedLate if the first frame the
    decoder presents is after the first instant (and decoding did not start at the very
    start of the video)."""
    import av

    start_s, end_s = window
    time_base, origin = stream.time_base, _origin_pts(info, stream)
    conv = _conversion_size(info, cfg)
    frames: list[SampledFrame] = []
    errors, k, last_time, first = 0, 0, -math.inf, True
    codec = stream.codec_context
    codec.skip_frame = "DEFAULT"  # the container is reused
    skipping = False
    for packet in packets:
        # A frame presented before the next sampling instant is never kept: let the decoder
        # drop it when no other frame references it (NONREF), so kept frames decode exactly
        # as before. With frame threading `k` lags, which only means more decoding.
        skip = (
            packet.pts is not None
            and k < len(targets)
            and float((packet.pts - origin) * time_base) + EPS_S < targets[k]
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
            t = float((frame.pts - origin) * time_base)
            if first:
                first = False
                if t > targets[0] + EPS_S and not from_start:
                    raise _LandedLate
            if t <= last_time or t < start_s - EPS_S:
                continue  # before the window, or out of order (non-monotonic timestamps)
            if t >= end_s:
                return frames, errors
            if k < len(targets) and t + EPS_S >= targets[k]:
                frames.append(_encode(frame, t, info, conv, cfg))
                last_time = t
                while k < len(targets) and targets[k] <= t + EPS_S:
                    k += 1
                if k >= len(targets):
                    return frames, errors
    return frames, errors


def _decode_keyframes(packets, stream, info, targets, window, cfg, from_start):
    """Keyframe mode: decodes only the keyframe packets that will be kept, each on its own
    (a keyframe needs no other frame; the decoder is drained and reset after each, so its
    frame comes out at once, with any codec and with frame threading)."""
    import av

    start_s, end_s = window
    time_base, origin = stream.time_base, _origin_pts(info, stream)
    conv = _conversion_size(info, cfg)
    frames: list[SampledFrame] = []
    errors, k, last_time, first = 0, 0, -math.inf, True
    codec = stream.codec_context
    codec.skip_frame = "DEFAULT"
    for packet in packets:
        if not packet.size:
            break
        if not packet.is_keyframe or packet.pts is None:
            continue
        t = float((packet.pts - origin) * time_base)
        if first:
            first = False
            if t > targets[0] + EPS_S and not from_start:
                raise _LandedLate
        if t <= last_time or t < start_s - EPS_S or t + EPS_S < targets[k]:
            continue  # not the first keyframe at or after the next instant: never decoded
        if t >= end_s:
            break
        try:
            decoded = [*codec.decode(packet), *codec.decode(None)]
        except av.error.FFmpegError:
            errors += 1
            decoded = []
        codec.flush_buffers()
        for frame in decoded[:1]:
            frames.append(_encode(frame, t, info, conv, cfg))
            last_time = t
            while k < len(targets) and targets[k] <= t + EPS_S:
                k += 1
        if k >= len(targets):
            break
    return frames, errors


def _conversion_size(info: VideoInfo, cfg) -> tuple[int, int]:
    """Size to convert decoded frames to: within `cfg.max_pixels`, in the stored orientation
    (frames are turned upright after converting)."""
    out_w, out_h = frame_size(info.width, info.height, cfg.max_pixels)
    return (out_h, out_w) if info.rotation in (90, 270) else (out_w, out_h)


def _encode(frame, t: float, info: VideoInfo, conv: tuple[int, int], cfg) -> SampledFrame:
    import numpy as np
    from PIL import Image

    array = frame.to_ndarray(width=conv[0], height=conv[1], format="rgb24")
    if info.rotation:
        array = np.ascontiguousarray(np.rot90(array, k=info.rotation // 90))
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=cfg.jpeg_quality)
    return SampledFrame(t, buf.getvalue(), array.shape[1], array.shape[0])
