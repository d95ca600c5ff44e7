"""The real tiny Qwen3-VL on one mixed batch (pages of different sizes, a video window, a
per-request token limit): every result equals the result of that request run alone, so left
padding and the attention mask keep requests from leaking into each other.

The checkpoint's own random weights answer newlines to everything, which no comparison could
tell apart; the weights are drawn again (tests/sharp_model.py) so that each answer depends on
its input, and the test first checks that it does."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sharp_model import redraw_weights
from vlbeam.schemas.config import ModelConfig, RenderConfig
from vlbeam.schemas.elements import VLRequest, VLResult
from vlbeam.transforms.backends.qwen_transformers import generate_batch, load_qwen
from vlbeam.transforms.media.pdf_render import open_pdf, render_pdf_page

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def sharp_model(tiny_model):
    """The tiny checkpoint loaded by vlbeam's loader, its matrices redrawn."""
    cfg = ModelConfig(model=str(tiny_model), device="cpu", max_new_tokens=MAX_NEW_TOKENS)
    loaded = load_qwen(cfg)
    redraw_weights(loaded.model)
    return loaded, cfg


def page(name: str, long_side: int) -> bytes:
    doc = open_pdf((SAMPLES / name).read_bytes())
    try:
        return render_pdf_page(doc, 1, RenderConfig(target_long_side=long_side)).image
    finally:
        doc.close()


def frames(count: int, size: tuple[int, int]) -> tuple[bytes, ...]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(array).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return tuple(out)


def mixed_batch() -> list[VLRequest]:
    return [
        VLRequest(images=(page("born_digital.pdf", 448),), prompt="qwenvl markdown"),
        VLRequest(images=(page("scanned_page.pdf", 192),), prompt="Read this page."),
        VLRequest(  # five frames at uneven true times: an odd count is padded to patches
            images=frames(5, (128, 96)),
            prompt="When does the square turn red?",
            frame_times_s=(12.0, 12.5, 13.0, 13.7, 14.0),
        ),
        VLRequest(images=(page("born_digital.pdf", 96),), prompt="Title?", max_new_tokens=4),
    ]


def outcome(result: VLResult) -> tuple:
    return (result.text, result.input_tokens, result.output_tokens, result.finish_reason,
            result.error_type)  # fmt: skip


def test_each_result_of_a_mixed_batch_equals_the_request_run_alone(sharp_model):
    loaded, cfg = sharp_model
    batch = mixed_batch()
    sizes = {Image.open(io.BytesIO(r.images[0])).size for r in batch}
    assert len(sizes) == 4  # four different image sizes: prompts of four lengths

    alone = [outcome(generate_batch(loaded, [request], cfg)[0]) for request in batch]
    # The comparison can fail: each answer depends on what the request shows.
    assert len({text for text, *_ in alone}) == len(batch), alone
    assert [o[2:4] for o in alone] == [(12, "length")] * 3 + [(4, "length")]
    assert len({o[1] for o in alone}) == len(batch)  # distinct prompt lengths (input tokens)

    batched = [outcome(r) for r in generate_batch(loaded, batch, cfg)]
    assert batched == alone
    # the order inside a batch does not matter either
    reversed_batch = [outcome(r) for r in generate_batch(loaded, batch[::-1], cfg)]
    assert reversed_batch == alone[::-1]
