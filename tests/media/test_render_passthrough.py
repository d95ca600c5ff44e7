"""Images already in the transport format, upright and within size, pass through unchanged;
anything else is decoded and re-encoded (and a broken file still fails)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.errors import InvalidImage
from vlbeam.transforms.media.pdf_render import render_image


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_an_rgb_png_within_size_passes_through_byte_for_byte():
    data = encoded(Image.new("RGB", (300, 400), (10, 200, 30)), "PNG", compress_level=9)
    page = render_image(data, RenderConfig())
    assert page.image == data and (page.width_px, page.height_px) == (300, 400)


@pytest.mark.parametrize(
    "image, fmt, cfg",
    [
        (Image.new("RGBA", (300, 400)), "PNG", RenderConfig()),  # alpha: flattened to RGB
        (Image.new("RGB", (3000, 400)), "PNG", RenderConfig()),  # too large: downscaled
        (Image.new("RGB", (300, 400)), "JPEG", RenderConfig()),  # not the transport format
        (Image.new("RGB", (300, 400)), "JPEG", RenderConfig(image_format="jpeg")),  # lossy: no
        (Image.new("RGB", (300, 400)), "PNG", RenderConfig(image_format="webp")),
    ],
    ids=["rgba", "too-large", "jpeg-to-png", "jpeg-to-jpeg", "png-to-webp"],
)
def test_other_images_are_re_encoded(image, fmt, cfg):
    data = encoded(image, fmt)
    page = render_image(data, cfg)
    assert page.image != data
    out = Image.open(io.BytesIO(page.image))
    assert out.format.lower() == cfg.image_format and out.mode == "RGB"


def test_a_truncated_png_still_fails():
    data = encoded(Image.effect_noise((300, 400), 50).convert("RGB"), "PNG")
    with pytest.raises(InvalidImage, match="cannot decode image"):
        render_image(data[: len(data) // 2], RenderConfig())


def test_a_bit_flipped_png_fails_its_checksum():
    data = bytearray(encoded(Image.effect_noise((300, 400), 50).convert("RGB"), "PNG"))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(InvalidImage, match="cannot decode image"):
        render_image(bytes(data), RenderConfig())


def test_a_png_with_exif_rotation_is_turned_upright():
    image = Image.new("RGB", (300, 400), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    page = render_image(encoded(image, "PNG", exif=exif), RenderConfig())
    assert (page.width_px, page.height_px) == (400, 300)
