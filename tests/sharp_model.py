"""A "sharp" variant of the tiny random Qwen3-VL: the same architecture, tokenizer and processor,
its matrices redrawn (seeded) from N(0, 0.3).

The tiny checkpoint's own initialisation answers newlines to every input, so a test comparing
two answers could never fail. With the redrawn weights each answer depends on the image and
the prompt (different pages, prompts or paddings give different tokens)."""

from __future__ import annotations

import shutil
from pathlib import Path

SEED = 0
STD = 0.3


def redraw_weights(model, seed: int = SEED, std: float = STD) -> None:
    """Redraw every matrix of `model` in place (norms and biases are kept)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                draw = torch.randn(parameter.shape, generator=generator) * std
                parameter.copy_(draw.to(parameter.dtype))


def write_sharp_checkpoint(tiny: Path, target: Path) -> Path:
    """A copy of the tiny checkpoint folder at `target` with redrawn weights."""
    from transformers import Qwen3VLForConditionalGeneration

    shutil.copytree(tiny, target, dirs_exist_ok=True)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny)
    redraw_weights(model)
    model.save_pretrained(target)
    return target


def ensure_sharp_checkpoint(tiny: Path, target: Path) -> Path:
    """`write_sharp_checkpoint` into `target` once, safe across processes (the workers of
    one pytest-xdist run share it: tests/conftest.py `sharp_model`); the copied tiny
    checkpoint's marker says the folder is whole, as it is renamed into place only then."""
    from vlbeam.transforms.backends.tiny_model import build_once

    return build_once(target, lambda folder: write_sharp_checkpoint(tiny, folder))
