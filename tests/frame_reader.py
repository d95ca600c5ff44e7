"""A model double for `FakeApiServer` that really reads the frames it is sent: videos with
coloured squares shown at known times, and an answer function that decodes every frame of a
request, finds the colour each numbered query of the prompt names, and answers from the
frames where it sees it and the `<t seconds>` times sent with them.

Its answer for a query: one span per run of consecutive frames showing the colour, from the
first such frame's time to the next frame's time (the shape shows until at least then), in the
JSON form the grounding prompts ask for. Coarse and dense prompts get the same reading: the
coarse pass's answer is simply made from sparser frames.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.fake_api_server import Answer, Recorded

COLOURS = {"red": (220, 20, 20), "blue": (20, 40, 220), "green": (20, 200, 40)}
GREY = (128, 128, 128)
_QUERY_LINE = re.compile(r"^\s*(\d+)\.\s+(.+?)\s*$")


@dataclass(frozen=True)
class Event:
    """A `colour` square shown while start_s <= t < end_s, its top-left corner at (x, y)."""

    colour: str
    start_s: float
    end_s: float
    x: int = 8
    y: int = 8
    side: int = 24


def draw(t: float, events: Sequence[Event], size: tuple[int, int]) -> np.ndarray:
    width, height = size
    image = np.full((height, width, 3), GREY, dtype=np.uint8)
    for event in events:
        if event.start_s <= t < event.end_s:
            image[event.y : event.y + event.side, event.x : event.x + event.side] = COLOURS[
                event.colour
            ]
    return image


def write_event_video(
    path: Path,
    duration_s: float,
    events: Sequence[Event],
    fps: float = 2.0,
    size: tuple[int, int] = (160, 90),
    gop: int = 20,
) -> Path:
    """An H.264 MP4 of `duration_s` at a constant `fps` showing `events` (frame i at i/fps)."""
    from tests.video_fixtures import write_video

    times = [i / fps for i in range(round(duration_s * fps))]
    return write_video(path, times, None, size=size, gop=gop, draw=lambda t: draw(t, events, size))


def sees(image_bytes: bytes, colour: str, min_pixels: int = 40) -> bool:
    """Whether a (JPEG) frame shows a patch of `colour`."""
    from PIL import Image

    array = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"), dtype=np.int16)
    close = np.abs(array - np.array(COLOURS[colour], dtype=np.int16)).max(axis=2) < 60
    return int(close.sum()) >= min_pixels


def prompt_queries(texts: Sequence[str]) -> dict[int, str]:
    """The numbered queries of the prompt: {number: colour named in it}."""
    found: dict[int, str] = {}
    for text in texts:
        after = text.split("Queries:", 1)[1] if "Queries:" in text else ""
        for line in after.splitlines():
            match = _QUERY_LINE.match(line)
            if match:
                colour = next((c for c in COLOURS if c in match[2].lower()), None)
                if colour is not None:
                    found[int(match[1])] = colour
    return found


def read_spans(frames: Sequence[tuple[float, bytes]], colour: str) -> list[tuple[float, float]]:
    """Runs of frames showing `colour`: (first frame's time, next frame's time)."""
    frames = sorted(frames, key=lambda f: f[0])
    times = [t for t, _ in frames]
    shown = [sees(image, colour) for _, image in frames]
    spans, start = [], None
    for i, on in enumerate(shown):
        if on and start is None:
            start = times[i]
        if start is not None and (not on or i == len(shown) - 1):
            last = i - 1 if not on else i
            step = (times[last + 1] - times[last]) if last + 1 < len(times) else _step(times)
            spans.append((start, round(times[last] + step, 3)))
            start = None
    return spans


def _step(times: Sequence[float]) -> float:
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0


def visual_tokens(num_frames: int, width: int, height: int) -> int:
    """Qwen3-VL's visual tokens for a clip: 16-px patches merged 2x2 (32 px per token side),
    two frames per temporal patch."""
    side = 32
    w = max(side, round(width / side) * side)
    h = max(side, round(height / side) * side)
    return math.ceil(num_frames / 2) * (w // side) * (h // side)


class FrameReader:
    """The answer function (`FakeApiServer(FrameReader())`). `garble(rec)` true: answer prose
    with no time in it (an answer nobody can parse). Counts what it was sent."""

    def __init__(self, garble: Callable[[Recorded], bool] | None = None) -> None:
        self.garble = garble
        self.frames = 0
        self.calls = 0
        self.visual_tokens = 0

    def __call__(self, rec: Recorded) -> Answer:
        from PIL import Image

        frames = [(t, image) for t, image in rec.timed_frames if t is not None]
        queries = prompt_queries(rec.texts)
        tokens = 0
        if frames:
            width, height = Image.open(io.BytesIO(frames[0][1])).size
            tokens = visual_tokens(len(frames), width, height)
        self.frames += len(frames)
        self.calls += 1
        self.visual_tokens += tokens
        if self.garble is not None and self.garble(rec):
            return Answer(text="Hard to say, the picture is busy.", prompt_tokens=tokens + 100)
        answer = [
            {"query": number, "start": start, "end": end}
            for number, colour in sorted(queries.items())
            for start, end in read_spans(frames, colour)
        ]
        return Answer(text=json.dumps(answer), prompt_tokens=tokens + 100, completion_tokens=10)


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0
