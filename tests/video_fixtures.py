"""Synthetic videos with known content at known times, written with PyAV (libx264)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

GREY = (128, 128, 128)
RED = (220, 20, 20)


def frame_with_square(width: int, height: int, red: bool) -> np.ndarray:
    """Grey frame; a red square in the top-left quarter when `red`."""
    image = np.full((height, width, 3), GREY, dtype=np.uint8)
    if red:
        image[: height // 2, : width // 2] = RED
    return image


def write_video(
    path: Path,
    times_s: Sequence[float],
    red_between: tuple[float, float] | None,
    size: tuple[int, int] = (320, 240),
    rotation: int | None = None,
    gop: int = 30,
    draw: Callable[[float], np.ndarray] | None = None,
) -> Path:
    """H.264 MP4 whose frames are presented exactly at `times_s` (ms time base, so
    variable frame rate is just irregular times). The red square shows while
    red_between[0] <= t < red_between[1]."""
    import av

    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for t in times_s:
            if draw is not None:
                array = draw(t)
            else:
                red = red_between is not None and red_between[0] <= t < red_between[1]
                array = frame_with_square(width, height, red)
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def constant_rate(duration_s: float, fps: float) -> list[float]:
    return [i / fps for i in range(round(duration_s * fps))]


def is_red(image) -> bool:
    """Whether a decoded frame (PIL image) shows the red square (top-left quarter)."""
    array = np.asarray(image.convert("RGB"), dtype=np.int16)
    h, w = array.shape[:2]
    patch = array[h // 8 : h * 3 // 8, w // 8 : w * 3 // 8].reshape(-1, 3).mean(axis=0)
    return patch[0] > 170 and patch[1] < 90


# ---------------------------------------------------------------- frame-numbered videos
#
# Each frame shows its own number as a 4x4 grid of black/white blocks (16 bits), so a
# decoded frame can be identified exactly, whatever codec, container or seek produced it.

STAMP_BITS = 16


def stamp_frame(number: int, width: int = 128, height: int = 96) -> np.ndarray:
    """RGB frame showing `number` as 16 blocks (bit i at row i // 4, column i % 4)."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    bw, bh = width // 4, height // 4
    for bit in range(STAMP_BITS):
        if number >> bit & 1:
            row, col = divmod(bit, 4)
            image[row * bh : (row + 1) * bh, col * bw : (col + 1) * bw] = 255
    return image


def read_stamp(image) -> int:
    """The number a stamped frame shows (PIL image or array, any size)."""
    array = np.asarray(image.convert("L") if hasattr(image, "convert") else image, np.float32)
    if array.ndim == 3:
        array = array.mean(axis=2)
    height, width = array.shape
    bw, bh = width / 4, height / 4
    number = 0
    for bit in range(STAMP_BITS):
        row, col = divmod(bit, 4)
        y0, y1 = int(row * bh + bh / 4), int((row + 1) * bh - bh / 4)
        x0, x1 = int(col * bw + bw / 4), int((col + 1) * bw - bw / 4)
        if array[y0:y1, x0:x1].mean() > 128:
            number |= 1 << bit
    return number


def write_stamped(
    path: Path,
    times_s: Sequence[float],
    codec: str = "libx264",
    fmt: str | None = None,
    codec_options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    time_base: Fraction = Fraction(1, 1000),
    size: tuple[int, int] = (128, 96),
    gop: int | None = None,
    rate: int = 25,
) -> Path:
    """A video whose frame i shows the number i and is presented at times_s[i] (written with
    PyAV: any container and encoder its FFmpeg has, e.g. mpegts, vob, webm, matroska, mp4)."""
    import av

    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options=codec_options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        if gop is not None:
            stream.codec_context.gop_size = gop
        for number, t in enumerate(times_s):
            frame = av.VideoFrame.from_ndarray(stamp_frame(number, width, height), format="rgb24")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ---------------------------------------------------------------- Matroska cue surgery

_CUES, _CUE_POINT, _CUE_TIME, _VOID = 0x1C53BB6B, 0xBB, 0xB3, 0xEC
_SEGMENT = 0x18538067


def _ebml_id(data: bytes, pos: int) -> tuple[int, int]:
    length = 1
    while not data[pos] & (0x80 >> (length - 1)):
        length += 1
    return int.from_bytes(data[pos : pos + length], "big"), length


def _ebml_size(data: bytes, pos: int) -> tuple[int | None, int]:
    first, length = data[pos], 1
    while not first & (0x80 >> (length - 1)):
        length += 1
    value = first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = value << 8 | byte
    unknown = value == (1 << (7 * length)) - 1
    return (None if unknown else value), length


def _children(data: bytes, start: int, end: int):
    """(id, element start, payload start, element end) of the elements in [start, end)."""
    pos = start
    while pos < end:
        ident, id_len = _ebml_id(data, pos)
        size, size_len = _ebml_size(data, pos + id_len)
        payload = pos + id_len + size_len
        stop = end if size is None else payload + size
        yield ident, pos, payload, stop
        pos = stop


def _cue_points(data: bytes) -> list[tuple[int, int, int]]:
    """(element start, payload start, end) of every CuePoint of the file."""
    for ident, _, payload, stop in _children(data, 0, len(data)):
        if ident == _SEGMENT:
            for child, _, cues, cues_end in _children(data, payload, stop):
                if child == _CUES:
                    return [
                        (s, p, e)
                        for c, s, p, e in _children(data, cues, cues_end)
                        if c == _CUE_POINT
                    ]
    raise ValueError("no Cues element in the file")


def thin_cues(path: Path, keep_every: int) -> int:
    """Turns all but every `keep_every`-th CuePoint into Void elements (a file whose cues
    index only some keyframes). Returns how many cue points are left."""
    data = bytearray(path.read_bytes())
    points = _cue_points(bytes(data))
    for number, (start, _, end) in enumerate(points):
        if number % keep_every:
            size = end - start - 2
            assert 0 <= size < 127, "cue point too large to void in place"
            data[start:end] = bytes([_VOID, 0x80 | size]) + bytes(size)
    path.write_bytes(bytes(data))
    return len(points[::keep_every])


def late_cues(path: Path) -> int:
    """Rewrites each CuePoint's time (but the first) to 1 ms after the previous one's, so
    a seek to a time before a cue's keyframe is sent to that keyframe's cluster and lands
    *after* the time sought (the failure seen on real WebM files). Returns cues changed."""
    data = bytearray(path.read_bytes())
    times = []
    for _, payload, end in _cue_points(bytes(data)):
        for ident, _, value_at, value_end in _children(bytes(data), payload, end):
            if ident == _CUE_TIME:
                times.append((value_at, value_end, int.from_bytes(data[value_at:value_end], "big")))
    for (_, _, previous), (value_at, value_end, _) in itertools.pairwise(times):
        data[value_at:value_end] = (previous + 1).to_bytes(value_end - value_at, "big")
    path.write_bytes(bytes(data))
    return len(times) - 1
