"""Turning a rendered page image, for a model that says the page is not upright (olmOCR 2's
rotation retry). Pure: encoded bytes in, encoded bytes out, in the same format.

Direction: olmOCR's `pipeline.py::build_page_query` (allenai/olmocr @ f7cfe4c) turns the
rendered page with PIL `transpose(Image.Transpose.ROTATE_<rotation_correction>)`, which turns
it *counter-clockwise* by that many degrees, and its training data
(`olmocr/train/dataloader.py::RotationAugmentation`) labels a page turned with ROTATE_90 as
needing `rotation_correction: 270`, so the two agree. (The JSON-schema wording "clockwise" in
`openai_response_format_schema` contradicts the code; the code is followed here.)
"""

from __future__ import annotations

import io

from vlbeam.transforms.media.pdf_render import encode_image

_FORMATS = {"PNG": "png", "WEBP": "webp", "JPEG": "jpeg"}


def rotate_page_image(data: bytes, degrees: int) -> bytes:
    """`data` (PNG/WebP/JPEG) turned counter-clockwise by `degrees` (0, 90, 180, 270), as PIL
    `transpose(ROTATE_<degrees>)` does; 0 returns `data` itself."""
    from PIL import Image

    if degrees % 360 == 0:
        return data
    transpose = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }.get(degrees % 360)
    if transpose is None:
        raise ValueError(f"a page turns by 0, 90, 180 or 270 degrees, not {degrees}")
    with Image.open(io.BytesIO(data)) as image:
        image_format = _FORMATS.get(image.format or "", "png")
        turned = image.convert("RGB").transpose(transpose)
    return encode_image(turned, image_format)
