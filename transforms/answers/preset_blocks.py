"""Boxes of layout blocks written on a model's own grid (Chandra 1: 0-1024, Chandra 2:
0-1000), brought onto the 0-1000 grid of the `blocks` table's `Block`
(`transforms/answers/blocks.py`), whose categories the preset parsers map to."""

from __future__ import annotations

import math
import re

from vlbeam.transforms.answers.blocks import CATEGORIES, FURNITURE, GRID, Block

__all__ = ["CATEGORIES", "FURNITURE", "GRID", "Block", "parse_grid_box"]

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_grid_box(value: str | None, grid: float) -> tuple[float, float, float, float] | None:
    """A `data-bbox` ("x0 y0 x1 y1" or "[x0, y0, x1, y1]") on a `grid`-sized grid → the box on
    the 0-1000 grid, clamped; None when missing, malformed, empty or far off the grid."""
    if not value:
        return None
    nums = [float(n) for n in _NUMBER.findall(value)]
    if len(nums) != 4 or not all(math.isfinite(n) for n in nums):
        return None
    x0, x1 = sorted(nums[0::2])
    y0, y1 = sorted(nums[1::2])
    if x0 < -0.02 * grid or y0 < -0.02 * grid or x1 > 1.02 * grid or y1 > 1.02 * grid:
        return None
    scale = GRID / grid
    box = tuple(round(min(GRID, max(0.0, v * scale)), 3) for v in (x0, y0, x1, y1))
    return box if box[2] > box[0] and box[3] > box[1] else None
