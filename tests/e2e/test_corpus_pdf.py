"""Conservation over the whole real-file PDF corpus: every input is accounted for."""

from __future__ import annotations

import csv
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.pipeline_helpers import fake_handler, read_table, run_job

# Every failure type a PDF may come to, and what its message must tell the reader.
EXPLAINED = {
    "EmptyFile": r"^file is empty \(0 bytes\)$",
    "UnsupportedInput": r"^unsupported file type \(.+\); vlbeam reads PDF",
    "InvalidPdf": r"^(not a readable PDF: |page \d+ cannot be loaded: |poppler )",
    "EncryptedPdf": r"--pdf-password",
    "NoPages": r"^PDF has no pages$",
    "InvalidImage": r"^cannot decode image: ",
    "PageTooLarge": r"(is beyond any real page|ran out of its memory limit)",
    "DegeneratePage": r"(has no area|aspect ratio of \d+:1)",
    "RenderTimeout": r"took longer than \d+(\.\d+)? s; gave up$",
    "RendererCrashed": r"^the render process died during ",
}
# What we know the hostile files must come to (file name → error type), from MANIFEST.tsv.
EXPECTED_FAILURES = {
    "zero_bytes.pdf": "EmptyFile",
    "samplefiles_libreoffice-writer-password.pdf": "EncryptedPdf",
    "pdfjs_saslprep-r6.pdf": "EncryptedPdf",
    "tracemonkey_truncated_50pct.pdf": "InvalidPdf",
    "ocrmypdf_invalid.pdf": "InvalidPdf",
    "qpdf_empty_zero_pages.pdf": "InvalidPdf",
}


def manifest_pages(corpus: Path) -> dict[str, int]:
    with open(corpus / "MANIFEST.tsv", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return {
            Path(r["path"]).name: int(r["pdf_pages"])
            for r in rows
            if r["path"].startswith("pdf/good/")
        }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_pdf_in_the_corpus_is_accounted_for(corpus, tmp_path):
    files = sorted((corpus / "pdf").glob("*/*.pdf"))
    assert len(files) >= 30
    out = tmp_path / "out"
    started = time.monotonic()
    run_job(
        [str(corpus / "pdf/good/*"), str(corpus / "pdf/bad/*")],
        out,
        "--target-long-side=512",
        "--render-timeout-s=30",
        "--pages-per-task=16",
        "--max-batch-size=8",
        handler=fake_handler(max_batch_size=8),
    )
    elapsed = time.monotonic() - started
    docs = read_table(out, "documents")
    pages = read_table(out, "pages")
    failures = read_table(out, "failures")

    # Exactly one documents row per input file.
    assert sorted(d["source_uri"] for d in docs) == sorted(str(f) for f in files)
    by_name = {Path(d["source_uri"]).name: d for d in docs}
    pages_of: dict[str, set[int]] = defaultdict(set)
    for page in pages:
        key = Path(page["source_uri"]).name
        assert page["page_number"] not in pages_of[key], "duplicate page row"
        pages_of[key].add(page["page_number"])
    failures_of: dict[str, list[dict]] = defaultdict(list)
    for failure in failures:
        failures_of[Path(failure["source_uri"]).name].append(failure)

    # Every good page has a pages row; good documents are ok.
    for name, n in manifest_pages(corpus).items():
        assert by_name[name]["status"] == "ok", (name, failures_of[name])
        assert by_name[name]["num_pages"] == n
        assert pages_of[name] == set(range(1, n + 1)), name

    # Every failure is explained, and every document adds up.
    for failure in failures:
        assert failure["error_type"] in EXPLAINED, failure
        assert re.search(EXPLAINED[failure["error_type"]], failure["message"]), failure
        assert failure["stage"] in {"sniff", "split", "render"}, failure
    for name, doc in by_name.items():
        page_failures = {f["unit"] for f in failures_of[name] if f["unit"] is not None}
        assert doc["num_failures"] == len(failures_of[name])
        assert doc["status"] == (
            "failed" if not pages_of[name] else "partial" if failures_of[name] else "ok"
        ), name
        assert pages_of[name] or failures_of[name], f"{name} vanished"
        if doc["num_pages"]:
            assert not pages_of[name] & page_failures
            assert pages_of[name] | page_failures == set(range(1, doc["num_pages"] + 1)), name
    for name, error in EXPECTED_FAILURES.items():
        assert [f["error_type"] for f in failures_of[name]] == [error], name
    print(
        f"corpus: {len(docs)} documents, {len(pages)} pages, {len(failures)} failures "
        f"in {elapsed:.1f} s"
    )
