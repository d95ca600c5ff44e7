"""End-to-end OCR job through Beam's in-process runner."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.pipeline_helpers import SAMPLES_GLOB, fake_handler, inked_page, read_table, run_job
from vlbeam.schemas.elements import VLResult
from vlbeam.schemas.errors import ModelNotFound


def direct_answers(model: str, max_new_tokens: int) -> dict[str, tuple[str, int]]:
    """(text, input tokens) of the model asked directly about page 1 of each sample PDF,
    rendered as the pipeline renders it by default, with the built-in OCR prompt."""
    from vlbeam.pipeline.prompts import DEFAULT_OCR_PROMPT_ID, builtin_prompt
    from vlbeam.schemas.config import ModelConfig, RenderConfig
    from vlbeam.schemas.elements import VLRequest
    from vlbeam.transforms.backends.qwen_transformers import generate_batch, load_qwen
    from vlbeam.transforms.media.pdf_render import open_pdf, render_pdf_page

    cfg = ModelConfig(model=model, device="cpu", max_new_tokens=max_new_tokens)
    loaded = load_qwen(cfg)
    prompt = builtin_prompt(DEFAULT_OCR_PROMPT_ID).text
    answers = {}
    for pdf in sorted(Path(SAMPLES_GLOB).parent.glob("*.pdf")):
        doc = open_pdf(pdf.read_bytes())
        try:
            image = render_pdf_page(doc, 1, RenderConfig()).image
        finally:
            doc.close()
        [result] = generate_batch(loaded, [VLRequest(images=(image,), prompt=prompt)], cfg)
        answers[pdf.name] = (result.text, result.input_tokens)
    assert len({tokens for _, tokens in answers.values()}) == 2  # two page sizes
    return answers


@pytest.mark.slow
def test_tiny_model_end_to_end_on_samples(sharp_model, tmp_path):
    """The real transformers path (from_pretrained on a folder, batched generate), on the
    sharp checkpoint (tests/sharp_model.py): its answer depends on the page, so a row equal
    to the model's direct answer to that page says the right page reached it, as rendered."""
    sharp = str(sharp_model)
    direct = direct_answers(sharp, 6)
    texts = {text for text, _ in direct.values()}
    assert len(texts) == 2 and all(t.strip() for t in texts)  # the comparison can fail
    out = tmp_path / "out"
    run_job(
        [SAMPLES_GLOB],
        out,
        f"--model={sharp}",
        "--max-new-tokens=6",
        "--max-batch-size=2",
        "--run-id=r1",
    )
    docs = read_table(out, "documents")
    pages = read_table(out, "pages")
    assert read_table(out, "failures") == []
    assert sorted(d["source_uri"].rsplit("/", 1)[1] for d in docs) == [
        "born_digital.pdf",
        "scanned_page.pdf",
    ]
    assert {d["status"] for d in docs} == {"ok"} and {d["num_pages"] for d in docs} == {1}
    assert len(pages) == 2
    for page in pages:
        assert page["model"] == sharp and page["backend"] == "transformers"
        assert page["prompt_id"] == "ocr_markdown_v1" and page["run_id"] == "r1"
        # random weights never emit EOS: every page is visibly truncated at the limit
        assert page["finish_reason"] == "length" and page["output_tokens"] == 6
        assert page["input_tokens"] > 100  # the image's visual tokens are counted
        assert page["latency_s"] > 0
        assert max(page["width_px"], page["height_px"]) == 1288
        # the row holds what the model answers to that page alone (text, prompt length)
        assert (page["text"], page["input_tokens"]) == direct[Path(page["source_uri"]).name]
    born = next(p for p in pages if p["source_uri"].endswith("born_digital.pdf"))
    assert "born-digital page" in born["text_layer"]
    scanned = next(p for p in pages if p["source_uri"].endswith("scanned_page.pdf"))
    assert scanned["text_layer"] is None


def test_doc_ids_are_content_hashes_and_reruns_replace_output(tmp_path):
    src = tmp_path / "in"
    shutil.copytree(Path(SAMPLES_GLOB).parent, src, ignore=shutil.ignore_patterns("*.md"))
    out = tmp_path / "out"
    run_job([f"{src}/*.pdf"], out, "--run-id=a", handler=fake_handler())
    first = sorted(read_table(out, "pages"), key=lambda r: r["doc_id"])
    # A second run (new run id, one input removed) replaces every table: no mix of runs.
    (src / "born_digital.pdf").unlink()
    run_job([f"{src}/*.pdf"], out, "--run-id=b", handler=fake_handler())
    second = read_table(out, "pages")
    assert {r["run_id"] for r in second} == {"b"} and len(second) == 1
    assert {r["run_id"] for r in read_table(out, "documents")} == {"b"}
    assert not (out / "_staging").exists()
    # Same inputs again with the same run id: the very same rows.
    (src / "born_digital.pdf").write_bytes(
        (Path(SAMPLES_GLOB).parent / "born_digital.pdf").read_bytes()
    )
    run_job([f"{src}/*.pdf"], out, "--run-id=a", handler=fake_handler())
    assert sorted(read_table(out, "pages"), key=lambda r: r["doc_id"]) == first
    import hashlib

    expected = hashlib.sha256((src / "born_digital.pdf").read_bytes()).hexdigest()
    assert expected in {r["doc_id"] for r in first}


POISONED = {3, 4, 9, 14}  # of 14 pages: two side by side, so a batch may hold both


def poisoned_pdf(path: Path) -> Path:
    """A 14-page PDF whose POISONED pages are solid red; page n of the others shows n bars."""
    pages = []
    for n in range(1, 15):
        page = inked_page((300, 400), "red" if n in POISONED else "white")
        if n not in POISONED:
            for bar in range(n):
                page.paste("black", (20, 20 + bar * 25, 280, 35 + bar * 25))
        pages.append(page)
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def is_poisoned(request) -> bool:
    image = Image.open(io.BytesIO(request.images[0])).convert("RGB")
    r, g, b = image.getpixel((image.width // 2, image.height // 2))
    return r > 200 and g < 60 and b < 60  # red (the PDF stores pages as JPEG)


def test_inference_error_fails_only_that_page(tmp_path):
    """A batch holding a poisoned page raises; it is retried page by page, so exactly the
    poisoned pages fail and every other page of the batch is kept."""
    pdf = poisoned_pdf(tmp_path / "poisoned.pdf")
    calls = tmp_path / "calls.log"

    def flaky(model, batch, cfg):
        poisoned = [is_poisoned(r) for r in batch]
        with open(calls, "a") as log:
            log.write(f"{len(batch)} {sum(poisoned)}\n")
        if any(poisoned) and len(batch) > 1:
            raise RuntimeError("batch contains a poisoned page")
        return [
            VLResult.failed(ValueError("poisoned page"))
            if bad
            else VLResult(
                text="ok", input_tokens=1, output_tokens=1, finish_reason="stop", latency_s=0.0
            )
            for bad in poisoned
        ]

    out = tmp_path / "out"
    run_job(
        [str(pdf)],
        out,
        "--max-batch-size=4",
        "--target-long-side=400",
        handler=fake_handler(flaky, max_batch_size=4),
    )
    pages, failures = read_table(out, "pages"), read_table(out, "failures")
    assert sorted(p["page_number"] for p in pages) == sorted(set(range(1, 15)) - POISONED)
    assert {p["text"] for p in pages} == {"ok"}
    assert sorted(f["unit"] for f in failures) == sorted(POISONED)
    for failure in failures:
        assert (failure["stage"], failure["error_type"], failure["message"]) == (
            "inference", "ValueError", "poisoned page"
        )  # fmt: skip
    [doc] = read_table(out, "documents")
    assert (doc["num_pages"], doc["status"], doc["num_failures"]) == (14, "partial", 4)
    # The batch path was taken: a batch with a poisoned page raised, then each poisoned
    # page was asked alone (and failed alone).
    logged = [tuple(map(int, line.split())) for line in calls.read_text().splitlines()]
    assert any(size > 1 and bad for size, bad in logged), logged
    assert logged.count((1, 1)) == len(POISONED), logged


def test_whole_batch_dead_letters_become_failure_rows(tmp_path):
    """A model call that raises for every batch and every request alone: one failure row per
    request, and the run goes on."""

    def broken(model, batch, cfg):
        raise MemoryError("CUDA out of memory (simulated)")

    handler = fake_handler(broken)
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, handler=handler)
    failures = read_table(out, "failures")
    assert read_table(out, "pages") == []
    assert len(failures) == 2
    assert {f["error_type"] for f in failures} == {"MemoryError"}
    assert {f["stage"] for f in failures} == {"inference"} and {f["unit"] for f in failures} == {1}
    assert {d["status"] for d in read_table(out, "documents")} == {"failed"}


def test_images_videos_and_junk(tmp_path, corpus):

    src = tmp_path / "in"
    src.mkdir()
    inked_page((3000, 1500)).save(src / "photo.dat", format="JPEG")
    shutil.copy(corpus / "video/good/love2d_sample.ogv", src / "clip.ogv")
    (src / "notes.pdf").write_text("<!DOCTYPE html><html><body>not a pdf</body></html>")
    (src / "empty.pdf").write_bytes(b"")
    out = tmp_path / "out"
    run_job([f"{src}/*", f"{tmp_path}/nothing-here/*"], out, "--tasks=ocr", handler=fake_handler())
    docs = {Path(d["source_uri"]).name: d for d in read_table(out, "documents")}
    failures = {Path(f["source_uri"]).name: f for f in read_table(out, "failures")}
    assert set(docs) == {"photo.dat", "clip.ogv", "notes.pdf", "empty.pdf"}
    assert docs["photo.dat"]["kind"] == "image" and docs["photo.dat"]["status"] == "ok"
    [page] = read_table(out, "pages")
    assert (page["width_px"], page["height_px"]) == (1288, 644)
    assert page["text"].startswith("1288x644 | ")  # the model saw the downscaled image
    assert docs["clip.ogv"]["kind"] == "video"
    assert failures["clip.ogv"]["stage"] == "task"
    assert "--tasks grounding" in failures["clip.ogv"]["message"]
    assert failures["notes.pdf"]["error_type"] == "UnsupportedInput"
    assert "html" in failures["notes.pdf"]["message"]
    assert failures["empty.pdf"]["error_type"] == "EmptyFile"
    assert failures["*"]["error_type"] == "NoFilesMatched"  # the pattern that matched nothing
    assert {d["status"] for n, d in docs.items() if n != "photo.dat"} == {"failed"}


def test_pdf2image_renderer(tmp_path):
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, "--pdf-renderer=pdf2image", handler=fake_handler())
    pages = read_table(out, "pages")
    assert len(pages) == 2 and read_table(out, "failures") == []
    for page in pages:
        assert max(page["width_px"], page["height_px"]) in (1287, 1288, 1289)
        assert page["text"].startswith(f"{page['width_px']}x{page['height_px']}")


def test_custom_prompt_file_is_versioned(tmp_path):
    prompt = tmp_path / "my_prompt.txt"
    prompt.write_text("Transcribe this page as GitHub-flavoured markdown.")
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, f"--ocr-prompt-file={prompt}", handler=fake_handler())
    pages = read_table(out, "pages")
    assert {p["prompt_id"] for p in pages} == {pages[0]["prompt_id"]}
    assert pages[0]["prompt_id"].startswith("file:my_prompt:")
    assert all(
        p["text"].endswith("| Transcribe this page as GitHub-flavoured markdown.") for p in pages
    )


def test_unknown_model_fails_fast_with_guidance(tmp_path, capsys):
    from vlbeam.pipeline.cli import main

    code = main(
        [
            "run",
            f"--input={SAMPLES_GLOB}",
            f"--output={tmp_path / 'o'}",
            "--model=nobody/no-such-model",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--model tiny-random" in err and "nobody/no-such-model" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ModelNotFound, match=r"config\.json"):
        run_job([SAMPLES_GLOB], tmp_path / "o", f"--model={tmp_path}")
