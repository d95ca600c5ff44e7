"""The image-size rules `vlbeam plan` and the run's accounting share (`vision_tokens`) give
the token counts of the real Qwen3-VL processor (transformers, the tiny model's config)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from vlbeam.schemas.elements import VLRequest
from vlbeam.transforms.backends.vision_tokens import (
    TokenCounter,
    VisionSpec,
    image_tokens,
    patch_times,
)


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_one_token_per_32_px_square_after_resizing():
    spec = VisionSpec()
    assert image_tokens(320, 320, spec) == 100  # 10 x 10 tokens, within the pixel range
    assert image_tokens(330, 310, spec) == 100  # rounded to multiples of 32
    assert image_tokens(100, 100, spec) == 64  # scaled up to the 65,536 px minimum
    big = image_tokens(8000, 8000, spec)
    assert big <= spec.image_max_pixels // 1024  # scaled down to the maximum
    assert patch_times([0.0, 0.5, 1.0], spec) == [0.25, 1.0]  # odd: last frame repeated


def test_the_spec_comes_from_the_model_folder(tiny_model):
    spec = VisionSpec.from_folder(str(tiny_model))
    assert (spec.patch_size, spec.merge_size, spec.temporal_patch_size) == (16, 2, 2)
    assert (spec.image_min_pixels, spec.image_max_pixels) == (65_536, 16_777_216)
    assert (spec.video_min_pixels, spec.video_max_pixels) == (4_096, 25_165_824)


@pytest.mark.slow
def test_counts_equal_the_real_processor(tiny_model):
    from transformers import AutoProcessor

    from vlbeam.transforms.backends.qwen_transformers import processor_inputs

    processor = AutoProcessor.from_pretrained(tiny_model)
    counter = TokenCounter(str(tiny_model))
    pages = [(911, 1288), (1288, 911), (1821, 1821), (100, 60), (5000, 30), (640, 360)]
    for width, height in pages:
        request = VLRequest(images=(_png(width, height),), prompt="Read it. qwenvl markdown")
        sent = int(processor_inputs(processor, [request])["attention_mask"].sum())
        assert counter.request_tokens(request) == sent, (width, height)
        assert counter.page_tokens([(width, height)], request.prompt) == sent
    windows = [(120, (448, 252), 0.0), (7, (320, 240), 58.3), (128, (448, 448), 1234.5),
               (2, (64, 64), 0.0)]  # fmt: skip
    for frames, (width, height), start in windows:
        times = tuple(round(start + i * 0.5 + 0.013, 6) for i in range(frames))
        request = VLRequest(
            images=tuple(_png(width, height) for _ in range(frames)),
            prompt="List the events.",
            frame_times_s=times,
        )
        sent = int(processor_inputs(processor, [request])["attention_mask"].sum())
        assert counter.request_tokens(request) == sent, (frames, width, height)
