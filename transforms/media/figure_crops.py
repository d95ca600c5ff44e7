"""Figures cut out of a rendered page: boxes on the model's 0-1000 grid → PNG crops, bounded in
number per page and in pixels per crop. Runs where the page image already is (the stage that
rendered it), so no pixels cross a shuffle."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

GRID = 1000.0
MIN_SIDE_PX = 8  # a crop smaller than this on a side is a speck, not a figure


@dataclass(frozen=True)
class Crop:
    index: int  # the box's position in `boxes`
    png: bytes
    width_px: int
    height_px: int
    sha256: str


def crop_figures(
    image: bytes,
    boxes: Sequence[tuple[float, float, float, float]],
    *,
    max_crops: int,
    max_pixels: int,
) -> tuple[list[Crop], dict[str, int]]:
    """Crops of `image` (encoded bytes) at each grid box, in order; and what was skipped, by
    reason: `too_many` (beyond `max_crops`), `too_small`. A crop over `max_pixels` is scaled
    down to fit."""
    from PIL import Image

    skipped = {"too_many": max(0, len(boxes) - max_crops), "too_small": 0}
    if not boxes or max_crops == 0:
        return [], skipped
    page = Image.open(io.BytesIO(image))
    page.load()
    w, h = page.size
    crops = []
    for index, (x0, y0, x1, y1) in enumerate(boxes[:max_crops]):
        left, top = math.floor(x0 / GRID * w), math.floor(y0 / GRID * h)
        right, bottom = math.ceil(x1 / GRID * w), math.ceil(y1 / GRID * h)
        left, top, right, bottom = max(0, left), max(0, top), min(w, right), min(h, bottom)
        if right - left < MIN_SIDE_PX or bottom - top < MIN_SIDE_PX:
            skipped["too_small"] += 1
            continue
        crop = page.crop((left, top, right, bottom))
        if crop.width * crop.height > max_pixels:
            scale = math.sqrt(max_pixels / (crop.width * crop.height))
            size = (max(1, int(crop.width * scale)), max(1, int(crop.height * scale)))
            crop = crop.resize(size)
        if crop.mode not in ("RGB", "L"):
            crop = crop.convert("RGB")
        buf = io.BytesIO()
        crop.save(buf, format="PNG", compress_level=6)
        png = buf.getvalue()
        crops.append(Crop(index, png, crop.width, crop.height, hashlib.sha256(png).hexdigest()))
    return crops, skipped
