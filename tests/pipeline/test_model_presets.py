"""`--model-preset`: the request each preset makes for a page (prompt text, message order,
image size, sampling) against the published form, written here from each model's own code or
card (sources in schemas/presets.py), not read back from vlbeam's prompt files; explicit flags
win over a preset; the managed server gets the preset's flags; the README lists every preset."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from vlbeam.pipeline.options import (
    VlbeamOptions,
    api_config,
    apply_model_preset,
    page_policy,
    render_config,
    server_spec,
)
from vlbeam.pipeline.prompts import ocr_prompt
from vlbeam.schemas.elements import PageImage
from vlbeam.schemas.presets import PRESETS, model_preset
from vlbeam.transforms.backends.openai_protocol import build_body
from vlbeam.transforms.backends.server_spec import server_command
from vlbeam.transforms.media.pdf_render import open_pdf, render_pdf_page
from vlbeam.transforms.ocr import page_request

README = Path(__file__).resolve().parents[2] / "README.md"

# olmocr/prompts/prompts.py::build_no_anchoring_v4_yaml_prompt() @ allenai/olmocr f7cfe4c
OLMOCR_PROMPT = (
    "Attached is one page of a document that you must process. Just return the plain text "
    "representation of this document as if you were reading it naturally. Convert equations "
    "to LateX and tables to HTML.\nIf there are any figures or charts, label them with the "
    "following markdown syntax ![Alt text describing the contents of the figure]"
    "(page_startx_starty_width_height.png)\nReturn your output as markdown, with a front "
    "matter section on top specifying values for the primary_language, is_rotation_valid, "
    "rotation_correction, is_table, and is_diagram parameters."
)
# Nanonets-OCR2-3B model card; the same in olmocr/bench/runners/run_nanonetsocr_2.py
NANONETS_PROMPT = (
    "Extract the text from the above document as if you were reading it naturally. Return the "
    "tables in html format. Return the equations in LaTeX representation. If there is an "
    "image in the document and image caption is not present, add a small description of the "
    "image inside the <img></img> tag; otherwise, add the image caption inside <img></img>. "
    "Watermarks should be wrapped in brackets. Ex: <watermark>OFFICIAL COPY</watermark>. Page "
    "numbers should be wrapped in brackets. Ex: <page_number>14</page_number> or "
    "<page_number>9/22</page_number>. Prefer using ☐ and ☑ for check boxes."
)
CHANDRA_LABELS = [
    "Caption", "Footnote", "Equation-Block", "List-Group", "Page-Header", "Page-Footer",
    "Image", "Section-Header", "Table", "Text", "Complex-Block", "Code-Block", "Form",
    "Table-Of-Contents", "Figure",
]  # fmt: skip
CHANDRA_TAGS = (
    "['math', 'br', 'i', 'b', 'u', 'del', 'sup', 'sub', 'table', 'tr', 'td', 'p', 'th', "
    "'div', 'pre', 'h1', 'h2', 'h3', 'h4', 'h5', 'ul', 'ol', 'li', 'input', 'a', 'span', "
    "'img', 'hr', 'tbody', 'small', 'caption', 'strong', 'thead', 'big', 'code'"
)

# per preset: text part first?, the page size rule, the sampling in the body
CHANDRA = dict(text_first=False, short_side=1632, max_tokens=12384, temperature=0.0, top_p=0.1)
PUBLISHED = {
    "olmocr-2": dict(text_first=True, long_side=1288, max_tokens=8000, temperature=0.1),
    "chandra": CHANDRA,
    "chandra-1": CHANDRA,
    "nanonets-ocr2": dict(text_first=False, short_side=1280, max_tokens=15000, temperature=0.0),
    "qwen3-vl": dict(text_first=False, long_side=1288, max_tokens=2048, temperature=0.0),
}
API = ["--backend=openai", "--provider=openai", "--base-url=http://h:1/v1", "--api-model=M",
       "--api-key-env="]  # fmt: skip


def letter_pdf(tmp_path: Path) -> bytes:
    """A US Letter page (612 x 792 pt: PIL writes PDFs at 72 dpi, 1 px = 1 pt) with ink."""
    page = Image.new("RGB", (612, 792), "white")
    page.paste((0, 0, 0), (50, 50, 400, 70))
    path = tmp_path / "letter.pdf"
    page.save(path, "PDF", resolution=72)
    return path.read_bytes()


def request_body(argv: list[str], pdf: bytes) -> tuple[dict, tuple[int, int]]:
    """The body vlbeam sends for page 1 of `pdf` under `argv`, and the page image's size."""
    opts = PipelineOptions(argv).view_as(VlbeamOptions)
    apply_model_preset(opts, argv)
    doc = open_pdf(pdf)
    try:
        rendered = render_pdf_page(doc, 1, render_config(opts))
    finally:
        doc.close()
    from vlbeam.schemas.elements import PageRef

    ref = PageRef("d" * 64, "x.pdf", 1, rendered.width_px, rendered.height_px)
    page = PageImage(ref, rendered.image, rendered.image_format)
    prompt = ocr_prompt(
        opts.ocr_prompt_file, opts.ocr_format, preset=model_preset(opts.model_preset)
    )
    _, request = page_request(page, prompt)
    body = build_body(api_config(opts), request)
    return body, (rendered.width_px, rendered.height_px)


def prompt_of(name: str) -> str:
    if name == "olmocr-2":
        return OLMOCR_PROMPT
    if name == "nanonets-ocr2":
        return NANONETS_PROMPT
    if name == "qwen3-vl":
        return "qwenvl markdown"
    return ""  # Chandra: checked piece by piece below


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_each_preset_sends_the_published_request(name, tmp_path):
    want = PUBLISHED[name]
    body, (w, h) = request_body([f"--model-preset={name}", *API], letter_pdf(tmp_path))
    [message] = body["messages"]  # one user message, no system message
    assert message["role"] == "user"
    kinds = [part["type"] for part in message["content"]]
    assert kinds == (["text", "image_url"] if want["text_first"] else ["image_url", "text"])
    text = next(p["text"] for p in message["content"] if p["type"] == "text")
    url = next(p["image_url"]["url"] for p in message["content"] if p["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")  # a PNG data URI, as every source sends
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.format == "PNG" and image.size == (w, h)
    if "long_side" in want:
        assert max(w, h) == want["long_side"] and abs(w / h - 612 / 792) < 2 / h
    else:
        assert min(w, h) == want["short_side"] and abs(w / h - 612 / 792) < 2 / h
    if name.startswith("chandra"):
        grid = "x0 y0 x1 y1 format.  Bboxes are normalized 0-1000."
        if name == "chandra-1":
            grid = "[x0, y0, x1, y1] format.  Bboxes are normalized 0-1024."
        assert text.startswith(
            "OCR this image to HTML, arranged as layout blocks.  Each layout block should be a "
            "div with the data-bbox attribute representing the bounding box of the block in "
            + grid
            + " The data-label attribute is the label for the block.\n\nUse the following "
            "labels:\n"
        )
        labels = [line[2:] for line in text.splitlines() if line.startswith("- ")]
        extra = ["Chemical-Block", "Diagram", "Bibliography", "Blank-Page"]
        assert labels == CHANDRA_LABELS + ([] if name == "chandra-1" else extra)
        assert f"Only use these tags {CHANDRA_TAGS}" in text
        assert text.endswith("Reading order should be correct and natural.")
    else:
        assert text == prompt_of(name)
    sampling = {k: body[k] for k in ("max_tokens", "temperature", "top_p") if k in body}
    expected = {k: want[k] for k in ("max_tokens", "temperature", "top_p") if k in want}
    assert sampling == expected
    assert set(body) == {"model", "messages", *expected}


def test_explicit_flags_win_over_the_preset(tmp_path):
    prompt_file = tmp_path / "mine.txt"
    prompt_file.write_text("Read this page.")
    argv = ["--model-preset=olmocr-2", *API, "--max-new-tokens=100", "--temperature=0",
            "--target-long-side=640", f"--ocr-prompt-file={prompt_file}"]  # fmt: skip
    body, (w, h) = request_body(argv, letter_pdf(tmp_path))
    assert body["max_tokens"] == 100 and body["temperature"] == 0.0 and max(w, h) == 640
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"]  # the preset's order stays
    assert parts[0]["text"] == "Read this page."
    # a long side given explicitly replaces a preset's short-side rule
    body, (w, h) = request_body(["--model-preset=nanonets-ocr2", *API, "--target-long-side=700"],
                                letter_pdf(tmp_path))  # fmt: skip
    assert max(w, h) == 700 and body["max_tokens"] == 15000
    # and a short side given explicitly replaces a preset's long-side rule
    _, (w, h) = request_body(["--model-preset=olmocr-2", *API, "--target-short-side=500"],
                             letter_pdf(tmp_path))  # fmt: skip
    assert min(w, h) == 500


def test_the_default_preset_changes_nothing(tmp_path):
    pdf = letter_pdf(tmp_path)
    assert request_body(API, pdf) == request_body(["--model-preset=qwen3-vl", *API], pdf)
    opts = PipelineOptions(API).view_as(VlbeamOptions)
    apply_model_preset(opts, API)
    policy = page_policy(opts)
    assert policy.answer_format == "markdown" and not policy.rotation_retry


def test_answer_reading_follows_the_preset():
    for name, preset in PRESETS.items():
        argv = [f"--model-preset={name}", *API]
        opts = PipelineOptions(argv).view_as(VlbeamOptions)
        apply_model_preset(opts, argv)
        policy = page_policy(opts)
        assert (policy.answer_format, policy.bbox_grid, policy.rotation_retry) == (
            preset.answer_format,
            preset.bbox_grid,
            preset.rotation_retry,
        )


def served(argv: list[str]) -> list[str]:
    opts = PipelineOptions(argv).view_as(VlbeamOptions)
    apply_model_preset(opts, argv)
    return server_command(server_spec(opts), "127.0.0.1", 8000)


def test_managed_server_gets_the_presets_flags():
    # olmocr/pipeline.py::vllm_server_task: --max-model-len 16384, no video per prompt
    cmd = served(["--model-preset=olmocr-2", "--backend=vllm", "--tasks=ocr",
                  "--model=allenai/olmOCR-2-7B-1025-FP8"])  # fmt: skip
    assert cmd[:3] == ["vllm", "serve", "allenai/olmOCR-2-7B-1025-FP8"]
    assert cmd[cmd.index("--max-model-len") + 1] == "16384"
    assert '"video":0' in cmd[cmd.index("--limit-mm-per-prompt") + 1]
    # chandra/scripts/vllm.py's batching flags, then the user's own (which win: later)
    cmd = served(["--model-preset=chandra-1", "--backend=vllm", "--model=datalab-to/chandra",
                  "--server-arg=--max-num-seqs=8", "--server-max-model-len=20000"])  # fmt: skip
    assert cmd[cmd.index("--max-model-len") + 1] == "20000"
    assert cmd[-5:] == ["--max-num-seqs", "32", "--max-num-batched-tokens", "65536",
                        "--max-num-seqs=8"]  # fmt: skip


def test_readme_lists_every_preset():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Model presets") :]
    section = section[: section.index("\n## ", 4)]
    for name, preset in PRESETS.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}`"))
        assert preset.model_id in row and preset.score.split()[0] in row
        assert f"--model-preset {name} --backend vllm --model {preset.model_id}" in section


def test_flags_that_cannot_apply_to_a_preset_are_refused():
    for argv, why in (
        (["--model-preset=chandra", "--ocr-format=markdown"], "would not change what it writes"),
        (["--model-preset=chandra-1", "--figures=crop"], "not cropped yet"),
    ):
        opts = PipelineOptions([*argv, *API]).view_as(VlbeamOptions)
        with pytest.raises(ValueError, match=why):
            apply_model_preset(opts, [*argv, *API])
    # the default preset keeps --ocr-format html (QwenVL HTML, its own prompt)
    argv = ["--ocr-format=html", *API]
    opts = PipelineOptions(argv).view_as(VlbeamOptions)
    apply_model_preset(opts, argv)
    assert ocr_prompt(None, opts.ocr_format, preset=model_preset(opts.model_preset)).text == (
        "qwenvl html"
    )
