"""olmOCR's rotation retry as the inference stage decides it (`rotation_retry`), and the page
turning it uses (`rotate_page_image`, PIL ROTATE_<n>: counter-clockwise, as olmOCR's code)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vlbeam.schemas.config import PagePolicy
from vlbeam.schemas.elements import PageRef, VLRequest, VLResult
from vlbeam.transforms.inference import _Pending, rotation_retry
from vlbeam.transforms.media.rotate import rotate_page_image

POLICY = PagePolicy(answer_format="olmocr-yaml", rotation_retry=True)
REF = PageRef("d" * 64, "x.pdf", 1, 30, 20)


def answer(valid: bool, rotation: int) -> VLResult:
    return VLResult(
        text=f"---\nprimary_language: en\nis_rotation_valid: {valid}\nrotation_correction: "
        f"{rotation}\nis_table: false\nis_diagram: false\n---\ntext",
        finish_reason="stop",
    )


def page() -> bytes:
    """30 x 20 px, one red pixel in the top-right corner."""
    pixels = np.full((20, 30, 3), 255, dtype=np.uint8)
    pixels[0, 29] = (255, 0, 0)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def red_at(data: bytes) -> tuple[int, int, tuple[int, int]]:
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    ys, xs = np.nonzero(image[..., 1] < 50)
    return int(xs[0]), int(ys[0]), (image.shape[1], image.shape[0])


def test_pages_turn_counter_clockwise_like_pil_rotate():
    assert red_at(page()) == (29, 0, (30, 20))
    assert red_at(rotate_page_image(page(), 90)) == (0, 0, (20, 30))  # top-right -> top-left
    assert red_at(rotate_page_image(page(), 180)) == (0, 19, (30, 20))
    assert red_at(rotate_page_image(page(), 270)) == (19, 29, (20, 30))
    assert rotate_page_image(page(), 0) == page()


def test_an_answer_saying_sideways_resends_the_page_turned_once():
    entry = _Pending(REF, VLRequest(images=(page(),), prompt="p", prompt_first=True))
    first = answer(False, 90)
    retry = rotation_retry(entry, first, POLICY)
    assert retry is not None and retry.rotated and retry.fallback is first
    assert retry.attempt == 1 and retry.request.rotation == 90 and retry.request.prompt_first
    assert red_at(retry.request.images[0]) == (0, 0, (20, 30))
    # once: the re-sent page's answer is kept whatever it says
    assert rotation_retry(retry, answer(False, 90), POLICY) is None
    # no retry for an upright page, an unreadable answer, or without the preset
    assert rotation_retry(entry, answer(True, 0), POLICY) is None
    assert rotation_retry(entry, VLResult(text="prose"), POLICY) is None
    assert rotation_retry(entry, first, PagePolicy()) is None
