"""Synthetic videos with known content at known times, written with PyAV (libx264)."""

from __future__ import annotations

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
