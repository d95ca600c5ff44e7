# ruff: noqa: E402  (the test dependency check runs before the imports that need it)
"""Spending the model only where it's needed: blank pages and (with `prefer`) good text layers
send no request; `compare` records agreement; degenerate answers are flagged and retried.
The requests actually sent are counted by a local fake API server, and by the local backend's
own model call."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import require_module

require_module("aiohttp", "openai")

from tests.fake_api_server import Answer, FakeApiServer
from tests.pipeline_helpers import fake_handler, inked_page, read_table, run_job
from vlbeam.schemas.elements import VLResult

BORN_DIGITAL = "pdf/good/pdfjs_tracemonkey.pdf"  # 14 pages with a good text layer
SCANNED = "pdf/good/ocrmypdf_linn.pdf"  # a scan without a text layer


def api_args(server, *extra: str) -> list[str]:
    return ["--backend=openai", "--provider=openai", "--api-model=m", "--no-preflight",
            f"--base-url={server.base_url}", "--api-key-env=", "--target-long-side=400",
            *extra]  # fmt: skip


SOFT_HYPHEN = "\x02"  # pdfium's marker for a hyphen that ends a line


def pdfium_text_layers(pdf: Path) -> list[str]:
    """Each page's text layer as pdfium gives it, read here (not through vlbeam)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        return [doc[i].get_textpage().get_text_bounded() for i in range(len(doc))]
    finally:
        doc.close()


def cleaned(layer: str) -> str:
    """The README's cleaned text layer, written out independently: pdfium's hyphen markers
    removed, CRLF to LF, NFC, control/private-use/unassigned characters other than newline
    and tab dropped, each line's trailing spaces trimmed, the ends stripped."""
    text = unicodedata.normalize("NFC", layer.replace("\r\n", "\n").replace(SOFT_HYPHEN, ""))
    kept = "".join(
        c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Co", "Cs", "Cn")
    )
    return "\n".join(line.rstrip() for line in kept.split("\n")).strip()


def mixed_pdf(path: Path) -> Path:
    """Page 1 text, page 2 blank (white), page 3 blank (off-white), page 4 one short line."""
    pages = [
        inked_page((300, 400), label="Hello"),
        Image.new("RGB", (300, 400), "white"),
        Image.new("RGB", (300, 400), (245, 242, 236)),
        inked_page((300, 400), label="x1"),
    ]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def by_page(out: Path, name: str | None = None) -> dict[tuple[str, int], dict]:
    return {
        (Path(r["source_uri"]).name, r["page_number"]): r
        for r in read_table(out, "pages")
        if name is None or Path(r["source_uri"]).name == name
    }


def test_blank_pages_send_no_request_and_sparse_ones_do(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    mixed_pdf(src / "mixed.pdf")
    out = tmp_path / "out"
    with FakeApiServer() as server:
        run_job([str(src / "mixed.pdf")], out, *api_args(server))
        sent = len(server.model_requests())
    rows = by_page(out)
    assert sent == 2  # pages 1 and 4 only
    assert {n: r["text_source"] for (_, n), r in rows.items()} == {
        1: "model", 2: "blank", 3: "blank", 4: "model"
    }  # fmt: skip
    for n in (2, 3):
        assert (
            rows[("mixed.pdf", n)]["text"] == "" and rows[("mixed.pdf", n)]["input_tokens"] is None
        )
        assert rows[("mixed.pdf", n)]["quality_flags"] == []  # a blank page's "" is not "empty"
    [doc] = read_table(out, "documents")
    assert doc["status"] == "ok" and doc["num_pages"] == 4
    assert "  model calls avoided: 2 blank" in capsys.readouterr().out


@pytest.mark.parametrize("policy", ["ocr", "prefer", "compare"])
def test_text_layer_policies_on_born_digital_and_scanned_pages(tmp_path, corpus, policy):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(corpus / BORN_DIGITAL, src / "paper.pdf")
    shutil.copy(corpus / SCANNED, src / "scan.pdf")
    out = tmp_path / "out"
    with FakeApiServer(lambda rec: Answer(text="# Some OCR text")) as server:
        run_job([f"{src}/*.pdf"], out, *api_args(server, f"--text-layer-policy={policy}"))
        sent = len(server.model_requests())
    paper, scan = by_page(out, "paper.pdf"), by_page(out, "scan.pdf")
    assert len(paper) == 14 and scan
    assert {r["text_source"] for r in scan.values()} == {"model"}  # no text layer: OCR
    if policy == "prefer":
        assert sent == len(scan)  # not one request for the born-digital paper
        assert {r["text_source"] for r in paper.values()} == {"text_layer"}
        layers = pdfium_text_layers(corpus / BORN_DIGITAL)
        assert sum(layer.count(SOFT_HYPHEN) for layer in layers) > 100  # cleaning has work
        for (_, n), row in paper.items():
            raw = layers[n - 1]
            assert row["text_layer"] == raw.replace("\r\n", "\n").strip()  # kept as read
            assert row["text"] == cleaned(raw), n  # what a text-layer row's `text` holds
            assert SOFT_HYPHEN not in row["text"] and "\r" not in row["text"]
            assert row["input_tokens"] is None and row["text_layer_agreement"] is None
    else:
        assert sent == 14 + len(scan)
        assert {r["text_source"] for r in paper.values()} == {"model"}
    agreements = [r["text_layer_agreement"] for r in paper.values()]
    if policy == "compare":
        assert all(a is not None and 0.0 <= a < 0.1 for a in agreements)  # "# Some OCR text"
        assert [r["text_layer_agreement"] for r in scan.values()] == [None] * len(scan)
    else:
        assert agreements == [None] * 14


def test_compare_scores_an_exact_transcription_as_full_agreement(tmp_path, corpus):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(corpus / BORN_DIGITAL, src / "paper.pdf")
    layers = {}

    def echo_layer(model, batch, cfg):  # a "model" that reads page 1's text layer back
        return [VLResult(text=layers.get("p1", ""), finish_reason="stop") for _ in batch]

    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(src / "paper.pdf"))
    layers["p1"] = doc[0].get_textpage().get_text_bounded()
    doc.close()
    out = tmp_path / "out"
    run_job([str(src / "paper.pdf")], out, "--text-layer-policy=compare", "--pages-per-task=14",
            "--target-long-side=400", handler=fake_handler(echo_layer))  # fmt: skip
    rows = by_page(out)
    assert rows[("paper.pdf", 1)]["text_layer_agreement"] == 1.0
    assert all(rows[("paper.pdf", n)]["text_layer_agreement"] < 0.5 for n in range(2, 15))


def test_local_backend_never_calls_the_model_for_blank_pages(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    mixed_pdf(src / "mixed.pdf")
    log = tmp_path / "calls.log"  # the handler is pickled: count calls in a file

    def counting(model, batch, cfg):
        with open(log, "a") as f:
            f.write(f"{len(batch)}\n")
        return [VLResult(text="text", finish_reason="stop") for _ in batch]

    out = tmp_path / "out"
    run_job([str(src / "mixed.pdf")], out, handler=fake_handler(counting))
    assert sum(int(n) for n in log.read_text().split()) == 2
    assert sorted(r["text_source"] for r in read_table(out, "pages")) == [
        "blank", "blank", "model", "model"
    ]  # fmt: skip


LOOP = "the cat sat on the mat. " * 40


def test_degenerate_answers_are_flagged_and_retried_at_a_rising_temperature(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    mixed_pdf(src / "mixed.pdf")
    temperatures = tmp_path / "temperatures.log"

    def loops_until_warm(rec):
        t = rec.body.get("temperature")
        with open(temperatures, "a") as f:
            f.write(f"{t}\n")
        if (t or 0) < 0.7:
            return Answer(text=LOOP, finish_reason="length")
        return Answer(text="# A real answer", finish_reason="stop")

    out = tmp_path / "out"
    with FakeApiServer(loops_until_warm) as server:
        run_job([str(src / "mixed.pdf")], out,
                *api_args(server, "--retry-degenerate=3", "--max-concurrency=1"))  # fmt: skip
    rows = by_page(out)
    for n in (1, 4):
        row = rows[("mixed.pdf", n)]
        assert row["text"] == "# A real answer" and row["quality_flags"] == []
        assert row["retries"] == 2  # greedy (0.0), 0.5, then 0.7: the best is kept
    sent = [float(t) for t in temperatures.read_text().split()]
    assert sorted(sent) == [0.0, 0.0, 0.5, 0.5, 0.7, 0.7]
    assert "  flagged pages: none (4 retries)" in capsys.readouterr().out


def test_flags_without_retries_and_the_best_of_all_attempts_kept(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    inked_page((300, 400)).save(src / "one.pdf")
    out = tmp_path / "out"
    with FakeApiServer(lambda rec: Answer(text=LOOP, finish_reason="length")) as server:
        run_job([str(src / "one.pdf")], out, *api_args(server, "--retry-degenerate=2"))
        assert len(server.model_requests()) == 3  # the first call and two retries
    [row] = read_table(out, "pages")
    assert row["quality_flags"] == ["repetition", "length"] and row["retries"] == 2
    assert row["text"] == LOOP  # every attempt alike: the first is kept
    printed = capsys.readouterr().out
    assert "  flagged pages: length 1, repetition 1 (2 retries)" in printed
