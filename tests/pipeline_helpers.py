"""Helpers for pipeline tests: run the job in-process and read its tables back."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from vlbeam.pipeline.run import run
from vlbeam.schemas.config import ModelConfig
from vlbeam.schemas.elements import VLRequest, VLResult
from vlbeam.transforms.backends.qwen_transformers import TransformersQwenHandler

SAMPLES_GLOB = str(Path(__file__).resolve().parents[1] / "samples" / "*.pdf")


def columns_of(schema) -> list[tuple]:
    """(name, type, nullable) of each column: what `Schema.equals` compares, except the name
    of a map's entries field (pyarrow's Parquet reader names it after the column, so a
    schema read back from a file never `equals` the declared one)."""
    return [(f.name, f.type, f.nullable) for f in schema]


def read_table(out: Path, table: str) -> list[dict]:
    return pq.read_table(out / table).to_pylist()


def echo_inference(model, batch: Sequence[VLRequest], cfg: ModelConfig) -> list[VLResult]:
    """A test double that looks at what it was given: it reports each image's size."""
    results = []
    for request in batch:
        sizes = [Image.open(io.BytesIO(data)).size for data in request.images]
        text = " ".join(f"{w}x{h}" for w, h in sizes) + f" | {request.prompt}"
        results.append(
            VLResult(
                text=text, input_tokens=10, output_tokens=3, finish_reason="stop", latency_s=0.01
            )
        )
    return results


def fake_handler(inference_fn=echo_inference, **cfg) -> TransformersQwenHandler:
    """The real handler class with the model load and the generate call replaced."""
    return TransformersQwenHandler(
        ModelConfig(model=cfg.pop("model", "fake-model"), **cfg),
        inference_fn=inference_fn,
        loader=lambda _cfg: None,
    )


def run_job(inputs: list[str], out: Path, *extra: str, handler=None):
    argv = [f"--input={pattern}" for pattern in inputs] + [f"--output={out}", *extra]
    return run(argv, model_handler=handler)


def inked_page(size: tuple[int, int], background="white", label: str = "A line of text"):
    """A page image with one line of text on it: cheap, but not blank (blank pages skip the
    model, so tests that exercise the model path need ink)."""
    from PIL import ImageDraw, ImageFont

    page = Image.new("RGB", size, background)
    font = ImageFont.load_default(size=max(11, min(size) // 12))  # still legible downscaled
    ImageDraw.Draw(page).text((4, 4), label, fill="black", font=font)
    return page


def build_wheel(out: Path) -> Path:
    """vlbeam's wheel, built from this checkout into `out`."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(repo)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = out.glob("vlbeam-*.whl")
    return wheel


def grounding_or_page_answers(model, batch, cfg) -> list[VLResult]:
    """A model double: one JSON span (1.0-2.5 s) for a video window, "# Page" for a page."""
    return [
        VLResult(
            text='[{"start": 1.0, "end": 2.5, "description": "a door opens"}]'
            if r.frame_times_s
            else "# Page",
            input_tokens=5,
            output_tokens=2,
            finish_reason="stop",
            latency_s=0.1,
        )
        for r in batch
    ]
