# ruff: noqa: E402  (the test dependency check runs before the imports that need it)
"""olmOCR 2 end to end through `vlbeam run --model-preset olmocr-2 --backend openai` against a
local server that *looks at the page it gets*: each page carries a red bar along its top edge,
so the server can tell an upright page from a sideways one. Sideways, it answers like olmOCR
(`is_rotation_valid: false, rotation_correction: 90`); upright, a valid answer. vlbeam must
re-send the sideways page turned as olmOCR turns it (PIL ROTATE_90, counter-clockwise), once,
and write text + metadata columns, the retry counted in `retries`."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import require_module

require_module("aiohttp", "openai")

from tests.fake_api_server import Answer, FakeApiServer, Recorded, decode_data_uri
from tests.pipeline_helpers import read_table, run_job

OLMOCR_PROMPT_START = "Attached is one page of a document that you must process."


def marked_page(label: str) -> Image.Image:
    """An upright US Letter page (612 x 792 pt at 72 dpi): a red bar along the top, text."""
    page = Image.new("RGB", (612, 792), "white")
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 611, 40), fill=(255, 0, 0))
    draw.text((60, 120), label, fill="black")
    draw.rectangle((60, 200, 500, 230), fill=(0, 0, 0))
    return page


def orientation(image: Image.Image) -> str:
    """Where the red bar is: top (upright), right (turned clockwise), bottom, left."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    ys, xs = np.nonzero(red)
    h, w = red.shape
    cy, cx = ys.mean() / h, xs.mean() / w
    return min(
        [("top", cy), ("bottom", 1 - cy), ("left", cx), ("right", 1 - cx)], key=lambda t: t[1]
    )[0]


# the correction olmOCR's model gives for each view (PIL ROTATE_<n>, counter-clockwise)
CORRECTION = {"top": 0, "right": 90, "bottom": 180, "left": 270}


def olmocr_server_answer(rec: Recorded) -> Answer:
    if rec.is_preflight:
        return Answer(text="OK", completion_tokens=1)
    [url] = rec.image_urls
    side = orientation(Image.open(io.BytesIO(decode_data_uri(url)[1])))
    valid = side == "top"
    text = f"Upright page, read {Image.open(io.BytesIO(decode_data_uri(url)[1])).size}"
    return Answer(
        text=(
            "---\nprimary_language: en\n"
            f"is_rotation_valid: {valid}\nrotation_correction: {CORRECTION[side]}\n"
            "is_table: False\nis_diagram: False\n---\n" + (text if valid else "sdrawkcab")
        )
    )


@pytest.fixture
def pdf(tmp_path):
    upright = marked_page("Page one")
    sideways = marked_page("Page two").rotate(-90, expand=True)  # scanned turned clockwise
    path = tmp_path / "scan.pdf"
    upright.save(path, "PDF", resolution=72, save_all=True, append_images=[sideways])
    return path


def test_sideways_page_is_turned_and_retried_once(pdf, tmp_path):
    out = tmp_path / "out"
    with FakeApiServer(olmocr_server_answer) as server:
        run_job(
            [str(pdf)],
            out,
            "--model-preset=olmocr-2",
            "--backend=openai",
            "--provider=openai",
            f"--base-url={server.base_url}",
            "--api-model=allenai/olmOCR-2-7B-1025-FP8",
            "--api-key-env=",
            "--run-id=rot1",
        )
        requests = server.model_requests()
    assert read_table(out, "failures") == []
    pages = sorted(read_table(out, "pages"), key=lambda r: r["page_number"])
    one, two = pages
    # page 1: upright, one call
    assert one["retries"] == 0 and one["quality_flags"] == []
    assert one["page_meta"] == {
        "primary_language": "en", "is_rotation_valid": True, "rotation_correction": 0,
        "is_table": False, "is_diagram": False, "rotation": 0,
    }  # fmt: skip
    assert one["text"] == f"Upright page, read ({one['width_px']}, 1288)"
    # page 2: seen sideways, turned counter-clockwise by 90, read upright
    assert two["retries"] == 1 and two["quality_flags"] == []
    assert two["page_meta"]["rotation"] == 90 and two["page_meta"]["is_rotation_valid"] is True
    assert two["text"] == f"Upright page, read ({one['width_px']}, 1288)"  # seen upright
    assert (two["width_px"], two["height_px"]) == (1288, one["width_px"])  # as rendered
    # what the server got: three requests, each in olmOCR's form
    assert len(requests) == 3
    seen = []
    for rec in requests:
        parts = rec.body["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["text", "image_url"]
        assert parts[0]["text"].startswith(OLMOCR_PROMPT_START)
        assert rec.body["temperature"] == 0.1 and rec.body["max_tokens"] == 8000
        image = Image.open(io.BytesIO(decode_data_uri(parts[1]["image_url"]["url"])[1]))
        assert max(image.size) == 1288
        seen.append((orientation(image), image.size))
    assert sorted(seen, key=str) == sorted(
        [("top", (one["width_px"], 1288)), ("right", (1288, one["width_px"])),
         ("top", (one["width_px"], 1288))], key=str
    )  # fmt: skip


def test_an_answer_that_is_not_front_matter_is_kept_and_flagged(pdf, tmp_path):
    out = tmp_path / "out"

    def prose(rec: Recorded) -> Answer:
        return Answer(text="OK" if rec.is_preflight else "I see a page with a red bar.")

    with FakeApiServer(prose) as server:
        run_job([str(pdf)], out, "--model-preset=olmocr-2", "--backend=openai",
                "--provider=openai", f"--base-url={server.base_url}", "--api-model=m",
                "--api-key-env=", "--run-id=rot2")  # fmt: skip
        assert len(server.model_requests()) == 2  # no rotation retry on an unreadable answer
    pages = read_table(out, "pages")
    assert [p["text"] for p in pages] == ["I see a page with a red bar."] * 2
    assert all(p["quality_flags"] == ["unparsed"] and p["page_meta"] is None for p in pages)
    assert read_table(out, "failures") == []
