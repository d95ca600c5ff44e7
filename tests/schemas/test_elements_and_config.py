"""Pure building blocks: elements, configs, errors, prompts, ids, planning and options."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from vlbeam.pipeline.options import VlbeamOptions, model_config, parse_tasks, render_config
from vlbeam.pipeline.prompts import (
    DEFAULT_OCR_PROMPT_ID,
    builtin_prompt,
    ocr_prompt,
    prompt_from_file,
)
from vlbeam.schemas import DOCUMENTS, FAILURES
from vlbeam.schemas.config import TASKS, ModelConfig, Prompt, RenderConfig
from vlbeam.schemas.elements import (
    DocumentFacts,
    Failure,
    PageRange,
    PageRef,
    SourceFile,
    VLRequest,
    VLResult,
)
from vlbeam.schemas.errors import (
    EmptyFile,
    EncryptedPdf,
    RemoteError,
    TaskNotEnabled,
    UnsupportedInput,
    error_message,
    error_type,
)
from vlbeam.schemas.ids import new_run_id, sha256_hex
from vlbeam.transforms.documents import document_row, document_status
from vlbeam.transforms.ingest import match_pattern, unprocessable_reason
from vlbeam.transforms.media.work_units import page_ranges

DOC_ID = "0" * 64


def _source(kind: str = "pdf", size: int | None = 1000, uri: str = "/in/a.pdf") -> SourceFile:
    return SourceFile(uri=uri, doc_id=DOC_ID, kind=kind, size_bytes=size)


# ---------------------------------------------------------------- elements


def test_source_file_validates() -> None:
    assert _source().kind == "pdf"
    assert SourceFile(uri="x", doc_id=None, kind="unknown", size_bytes=None).doc_id is None
    with pytest.raises(ValueError, match="unknown kind 'text'"):
        SourceFile(uri="x", doc_id=DOC_ID, kind="text", size_bytes=1)
    with pytest.raises(ValueError, match="SHA-256"):
        SourceFile(uri="x", doc_id="abc", kind="pdf", size_bytes=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        _source().kind = "image"


@pytest.mark.parametrize(("first", "last", "n"), [(0, 1, 1), (2, 1, 3), (1, 4, 3), (1, 1, 0)])
def test_page_range_bounds(first: int, last: int, n: int) -> None:
    with pytest.raises(ValueError, match="bad page range"):
        PageRange(_source(), first, last, n)


def test_page_range_pages() -> None:
    assert list(PageRange(_source(), 3, 5, 9).page_numbers) == [3, 4, 5]
    assert list(PageRange(_source(), 1, 1, 1).page_numbers) == [1]


def test_page_ref() -> None:
    ref = PageRef(doc_id=DOC_ID, source_uri="u", page_number=7, width_px=10, height_px=20)
    assert ref.text_layer is None
    with pytest.raises(ValueError, match="1-based"):
        PageRef(doc_id=DOC_ID, source_uri="u", page_number=0, width_px=10, height_px=20)


def test_vl_request_needs_a_prompt() -> None:
    assert VLRequest(images=(b"x",), prompt="read").max_new_tokens is None
    with pytest.raises(ValueError, match="prompt"):
        VLRequest(images=(b"x",), prompt="")


def test_vl_result_failed() -> None:
    assert VLResult(text="hi").ok
    failed = VLResult.failed(RemoteError("PageTooLarge", "too big"))
    assert not failed.ok
    assert (failed.text, failed.error_type, failed.error_message) == (
        None,
        "PageTooLarge",
        "too big",
    )


def test_failure_from_exception_and_row() -> None:
    failure = Failure.from_exception(
        EncryptedPdf("needs a password"), source_uri="/in/a.pdf", doc_id=DOC_ID, stage="split"
    )
    assert (failure.error_type, failure.message, failure.unit) == (
        "EncryptedPdf",
        "needs a password",
        None,
    )
    remote = Failure.from_exception(
        RemoteError("InvalidPdf", "broken"), source_uri="u", doc_id=None, stage="render", unit=3
    )
    assert (remote.error_type, remote.unit) == ("InvalidPdf", 3)

    row = remote.to_row("run-1")
    assert set(row) == set(FAILURES.names)
    assert row == {
        "source_uri": "u",
        "doc_id": None,
        "stage": "render",
        "unit": 3,
        "error_type": "InvalidPdf",
        "message": "broken",
        "run_id": "run-1",
        "meta": None,
    }


# ---------------------------------------------------------------- errors


def test_error_type_and_message() -> None:
    assert error_type(RemoteError("EncryptedPdf", "x")) == "EncryptedPdf"
    assert error_type(RemoteError("", "x")) == "RemoteError"  # no name → the class
    assert error_type(KeyError("k")) == "KeyError"
    assert error_message(ValueError()) == "ValueError()"  # never empty
    assert error_message(ValueError("  spaced  ")) == "spaced"
    long = error_message(ValueError("x" * 5000))
    assert len(long) == 2000 and long.endswith("...")


# ---------------------------------------------------------------- configs


def test_render_config_repr_hides_password() -> None:
    cfg = RenderConfig(password="hunter2")
    assert "hunter2" not in repr(cfg)
    assert "password=***" in repr(cfg)
    assert "hunter2" not in str(cfg)
    assert "password=None" in repr(RenderConfig())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"renderer": "mupdf"},
        {"image_format": "bmp"},
        {"target_long_side": 63},
        {"target_long_side": 16385},
        {"max_pixels": 27 * 27},
        {"timeout_s": 0},
        {"timeout_s": -1},
        {"max_memory_mb": 255},
        {"pages_per_task": 0},
    ],
)
def test_render_config_rejects(kwargs: dict) -> None:
    field = next(iter(kwargs))  # the message names the setting that is wrong
    with pytest.raises(ValueError, match=field.replace("_", "[_ ]")):
        RenderConfig(**kwargs)


def test_render_config_accepts_bounds() -> None:
    RenderConfig(target_long_side=64, max_pixels=28 * 28, max_memory_mb=256, pages_per_task=1)
    RenderConfig(target_long_side=16384, renderer="pdf2image", image_format="webp")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": ""},
        {"device": "tpu"},
        {"dtype": "int8"},
        {"max_new_tokens": 0},
        {"max_batch_size": 0},
        {"max_batch_pixels": 0},
        {"max_batch_duration_secs": 0},
    ],
)
def test_model_config_rejects(kwargs: dict) -> None:
    field = next(iter(kwargs))
    with pytest.raises(ValueError, match=field.split("_")[-1]):
        ModelConfig(**kwargs)


def test_prompt_validates() -> None:
    with pytest.raises(ValueError, match="a prompt needs an id and non-empty text"):
        Prompt(prompt_id="", text="x")
    with pytest.raises(ValueError, match="a prompt needs an id and non-empty text"):
        Prompt(prompt_id="p", text="  \n ")


# ---------------------------------------------------------------- prompts


def test_builtin_ocr_prompt() -> None:
    prompt = ocr_prompt(None)
    assert prompt.prompt_id == DEFAULT_OCR_PROMPT_ID == "ocr_markdown_v1"
    assert prompt.text and prompt.text == prompt.text.strip()
    assert builtin_prompt("ocr_markdown_v1") == prompt
    with pytest.raises(ValueError, match="no built-in prompt"):
        builtin_prompt("nope_v0")


def test_prompt_from_file_pins_content(tmp_path: Path) -> None:
    path = tmp_path / "my_prompt.txt"
    path.write_text("  Read the page.\n", encoding="utf-8")
    first = prompt_from_file(str(path))
    digest = hashlib.sha256(b"Read the page.").hexdigest()[:12]
    assert first.prompt_id == f"file:my_prompt:{digest}"
    assert first.text == "Read the page."
    assert ocr_prompt(str(path)) == first
    assert prompt_from_file(str(path)).prompt_id == first.prompt_id  # stable

    path.write_text("Read the page as markdown.", encoding="utf-8")
    second = prompt_from_file(str(path))
    assert second.prompt_id != first.prompt_id
    assert second.prompt_id.startswith("file:my_prompt:")


def test_prompt_from_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(" \n\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        prompt_from_file(str(path))


# ---------------------------------------------------------------- ids


def test_sha256_hex() -> None:
    data = b"hello world" * 1000
    assert sha256_hex([data[:5], data[5:7000], data[7000:]]) == hashlib.sha256(data).hexdigest()
    assert sha256_hex([]) == hashlib.sha256(b"").hexdigest()
    assert sha256_hex(iter([b"a", b"b"])) == hashlib.sha256(b"ab").hexdigest()


def test_new_run_id() -> None:
    fixed = datetime(2026, 11, 22, 8, 30, 0, tzinfo=UTC)
    run_id = new_run_id(fixed)
    assert re.fullmatch(r"20261122T083000Z-[0-9a-f]{6}", run_id)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", new_run_id())
    assert len({new_run_id(fixed) for _ in range(20)}) > 1  # random suffix


# ---------------------------------------------------------------- split planning


@pytest.mark.parametrize(
    ("n", "per_task"), [(1, 8), (8, 8), (9, 8), (17, 8), (352, 16), (5, 1), (3, 100)]
)
def test_page_ranges_cover_every_page_once(n: int, per_task: int) -> None:
    ranges = page_ranges(_source(), n, per_task)
    pages = [p for r in ranges for p in r.page_numbers]
    assert pages == list(range(1, n + 1))
    assert len(ranges) == -(-n // per_task)
    assert all(r.num_pages == n for r in ranges)
    assert all(len(r.page_numbers) == per_task for r in ranges[:-1])
    assert 1 <= len(ranges[-1].page_numbers) <= per_task


# ---------------------------------------------------------------- documents


@pytest.mark.parametrize(
    ("ok", "failed", "status"),
    [(3, 0, "ok"), (2, 1, "partial"), (0, 2, "failed"), (0, 0, "failed"), (1, 0, "ok")],
)
def test_document_status(ok: int, failed: int, status: str) -> None:
    assert document_status(ok, failed) == status


def test_document_row_matches_schema() -> None:
    provenance = {"model": "m", "backend": "transformers", "prompt_id": "p"}
    facts = DocumentFacts("/in/a.pdf", num_pages=5)
    row = document_row(_source(size=1234), facts, 4, 1, provenance, "r")
    assert set(row) == set(DOCUMENTS.names)
    assert row["status"] == "partial"
    assert (row["num_pages"], row["num_failures"], row["size_bytes"]) == (5, 1, 1234)
    assert (row["doc_id"], row["source_uri"], row["kind"]) == (DOC_ID, "/in/a.pdf", "pdf")
    assert (row["model"], row["backend"], row["prompt_id"], row["run_id"]) == (
        "m",
        "transformers",
        "p",
        "r",
    )


def test_document_row_for_a_file_that_never_got_split() -> None:
    row = document_row(_source("unknown", size=0), DocumentFacts("/in/a.pdf"), 0, 1, {}, "r")
    assert row["status"] == "failed"
    assert row["num_pages"] is None
    assert row["model"] is None


# ---------------------------------------------------------------- ingest


def test_unprocessable_reason() -> None:
    ocr = frozenset({"ocr"})
    assert unprocessable_reason(_source("pdf"), "pdf", ocr) is None
    assert unprocessable_reason(_source("image"), "png", ocr) is None
    assert isinstance(unprocessable_reason(_source("pdf"), "pdf", frozenset()), TaskNotEnabled)
    assert isinstance(unprocessable_reason(_source("video"), "mp4/mov", ocr), TaskNotEnabled)
    if "grounding" in TASKS:
        assert unprocessable_reason(_source("video"), "mp4/mov", frozenset(TASKS)) is None
    empty = unprocessable_reason(_source("unknown", size=0), "empty", ocr)
    assert isinstance(empty, EmptyFile)
    audio = unprocessable_reason(_source("audio"), "mp3", ocr)
    assert isinstance(audio, UnsupportedInput) and "audio without video" in str(audio)
    html = unprocessable_reason(_source("unknown"), "html", ocr)
    assert isinstance(html, UnsupportedInput) and "(html)" in str(html)


def test_match_pattern(tmp_path: Path) -> None:
    for name in ("b.pdf", "a.pdf", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    paths, failure = match_pattern(str(tmp_path / "*.pdf"))
    assert failure is None
    assert paths == [str(tmp_path / "a.pdf"), str(tmp_path / "b.pdf")]


@pytest.mark.parametrize("pattern", ["", "{tmp}/nothing/*.pdf", "{tmp}/*.nomatch"])
def test_match_pattern_no_files(tmp_path: Path, pattern: str) -> None:
    pattern = pattern.format(tmp=tmp_path)
    paths, failure = match_pattern(pattern)
    assert paths == []
    assert failure is not None
    assert (failure.error_type, failure.stage, failure.source_uri) == (
        "NoFilesMatched",
        "ingest",
        pattern,
    )
    assert "matched no files" in failure.message


# ---------------------------------------------------------------- options


def test_parse_tasks() -> None:
    assert parse_tasks("ocr") == frozenset({"ocr"})
    assert parse_tasks(" ocr , ocr,") == frozenset({"ocr"})
    assert parse_tasks(",".join(TASKS)) == frozenset(TASKS)
    for bad in ("", " , ", "ocr,no_such_task", "OCR"):
        with pytest.raises(ValueError, match="--tasks"):
            parse_tasks(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-new-tokens", "5"],
        ["--max-new-tokens=5"],
        ["--max_new_tokens=5"],
        ["--max_new_tokens", "5"],
    ],
)
def test_options_accept_both_spellings(argv: list[str]) -> None:
    opts = PipelineOptions(argv).view_as(VlbeamOptions)
    assert opts.max_new_tokens == 5
    assert model_config(opts).max_new_tokens == 5


def test_options_defaults_and_configs() -> None:
    opts = PipelineOptions([]).view_as(VlbeamOptions)
    assert model_config(opts) == ModelConfig()
    assert render_config(opts) == RenderConfig()
    assert "ocr" in parse_tasks(opts.tasks)
    assert opts.input is None

    opts = PipelineOptions(
        [
            "--input=a/*.pdf",
            "--input",
            "b/*.pdf",
            "--pdf-password=pw",
            "--page_image_format=webp",
            "--target-long-side=512",
            "--render-timeout-s=2.5",
            "--max-batch-size=16",
            "--runner=DirectRunner",  # a Beam flag passes straight through
        ]
    ).view_as(VlbeamOptions)
    assert opts.input == ["a/*.pdf", "b/*.pdf"]
    assert model_config(opts).max_batch_size == 16
    cfg = render_config(opts)
    assert (cfg.password, cfg.image_format, cfg.target_long_side, cfg.timeout_s) == (
        "pw",
        "webp",
        512,
        2.5,
    )


def test_options_survive_beam_round_trip() -> None:
    # Workers rebuild options from get_all_options() under the underscored names.
    original = PipelineOptions(["--max-new-tokens=7", "--pdf-renderer=pdf2image"])
    flat = original.view_as(VlbeamOptions).get_all_options()
    assert flat["max_new_tokens"] == 7 and flat["pdf_renderer"] == "pdf2image"
    rebuilt = PipelineOptions.from_dictionary(
        {k: v for k, v in flat.items() if k in ("max_new_tokens", "pdf_renderer")}
    ).view_as(VlbeamOptions)
    assert (rebuilt.max_new_tokens, rebuilt.pdf_renderer) == (7, "pdf2image")
