"""`vlbeam plan` (counts, tokens, hostile files), `--max-cost` (at launch and mid-run against
a local server with known token usage), progress lines without a terminal, and the Beam
counters of a run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from tests.fake_api_server import Answer, FakeApiServer
from tests.pipeline_helpers import fake_handler, inked_page, read_table, run_job
from vlbeam.pipeline import cli
from vlbeam.pipeline.options import VlbeamOptions
from vlbeam.pipeline.plan import build_plan
from vlbeam.pipeline.summary import counters
from vlbeam.schemas.elements import SourceFile
from vlbeam.schemas.errors import BudgetExceeded
from vlbeam.transforms.media.helper_process import HelperProcess
from vlbeam.transforms.media.video_decode import SamplingConfig, target_times
from vlbeam.transforms.media.work_units import VideoConfig, plan_windows

REQUIRED_KEYS = {"files", "pages", "video_seconds", "windows", "frames", "model_calls",
                 "input_tokens", "max_output_tokens", "cost_usd"}  # fmt: skip


def _plan(*argv: str):
    return build_plan(PipelineOptions(list(argv)).view_as(VlbeamOptions))


def _pdf(path: Path, pages: int, size=(400, 520)) -> Path:
    images = [inked_page(size, label=f"Page {i + 1} of the test") for i in range(pages)]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def test_plan_counts_corpus_pdfs_and_reports_hostile_files(corpus, tiny_model):
    plan = _plan(f"--input={corpus}/pdf/good/*", f"--input={corpus}/pdf/bad/*",
                 "--model=tiny-random")  # fmt: skip
    by_name = {Path(f.uri).name: f for f in plan.files}
    for path in sorted((corpus / "pdf/good").glob("*.pdf")):
        doc = pdfium.PdfDocument(str(path))
        assert by_name[path.name].pages == len(doc), path.name
        assert by_name[path.name].error is None
        doc.close()
    assert by_name["zero_bytes.pdf"].error.startswith("EmptyFile:")
    assert by_name["pdfjs_saslprep-r6.pdf"].error.startswith("EncryptedPdf:")
    assert by_name["tracemonkey_truncated_50pct.pdf"].error.startswith("InvalidPdf:")
    # a page pdfium can't size is a page failure, as the run's render makes it
    assert by_name["pdfjs_poppler-85140-0.pdf"].unit_failures == 1
    totals = plan.totals()
    assert totals["failing_files"] >= 6 and totals["pages"] > 500
    assert totals["input_tokens"] > 0 and totals["cost_usd"] is None


def test_plan_windows_and_frames_are_the_runs(corpus, tiny_model):
    """Windows from the run's own probe and planner, frames from its sampling instants."""
    plan = _plan(f"--input={corpus}/video/good/*", "--model=tiny-random", "--window-seconds=20",
                 "--window-overlap-seconds=2", "--fps=1")  # fmt: skip
    cfg = VideoConfig(window_s=20, overlap_s=2, sampling=SamplingConfig(fps=1.0))
    helper = HelperProcess()
    try:
        checked = 0
        for file in plan.files:
            if file.error:
                assert file.kind == "video" and file.error.startswith("NoVideoStream:")
                continue
            info = helper.probe_video(file.uri, 60)
            source = SourceFile(uri=file.uri, doc_id=None, kind="video", size_bytes=1)
            windows = plan_windows(source, info.duration_s, cfg)
            assert file.windows == len(windows)
            assert file.window_frames == tuple(
                len(target_times(w.start_s, w.end_s, cfg.sampling)) for w in windows
            )
            assert file.video_seconds == info.duration_s
            checked += 1
    finally:
        helper.close()
    assert checked >= 10


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_plan_tokens_equal_what_a_tiny_model_run_sends(corpus, tiny_model, tmp_path):
    inputs = [
        corpus / "pdf/good/samplefiles_habibi-rotated.pdf",  # rotated pages
        corpus / "pdf/good/pypdf_Seige_of_Vicksburg_Sample_OCR.pdf",
        corpus / "video/good/moviepy_fire2.mp4",
        corpus / "video/good/mediabunny_rotate-buck-bunny.mp4",  # rotation metadata
    ]
    flags = ["--model=tiny-random", "--max-new-tokens=2", "--target-long-side=640",
             "--window-seconds=3", "--window-overlap-seconds=1", "--fps=4"]  # fmt: skip
    plan = _plan(*[f"--input={p}" for p in inputs], *flags)
    out = tmp_path / "out"
    run_job([str(p) for p in inputs], out, *flags)
    by_uri = {f.uri: f for f in plan.files}
    pages, windows = read_table(out, "pages"), read_table(out, "video_windows")
    # every planned call was made (a window's garbage answer still has its row)
    assert len(pages) == 10 and len(pages) + len(windows) == plan.totals()["model_calls"]
    for row in pages:
        planned = by_uri[row["source_uri"]].page_tokens[row["page_number"] - 1]
        assert row["input_tokens"] == planned, row["page_number"]
    for row in windows:
        file = by_uri[row["source_uri"]]
        assert row["num_frames"] == file.window_frames[row["window_index"]]
        assert row["input_tokens"] == file.window_tokens[row["window_index"]]
    # the whole run's input tokens (windows with unparseable answers included)
    run_tokens = counters_from_manifest(out)["input_tokens"]
    assert abs(plan.totals()["input_tokens"] - run_tokens) <= 0.01 * run_tokens


def counters_from_manifest(out: Path) -> dict:
    [manifest] = (out / "_runs").glob("*.json")
    return json.loads(manifest.read_text())["counts"]


def test_plan_cli_prints_the_table_and_the_json(tmp_path, tiny_model, capsys):
    pdf = _pdf(tmp_path / "three.pdf", 3)
    (tmp_path / "notes.txt").write_text("not a document")
    assert cli.main(["plan", f"--input={tmp_path}/*", "--model=tiny-random"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["kind", "files", "pages"]
    assert "notes.txt: UnsupportedInput" in table
    argv = ["plan", f"--input={pdf}", "--model=tiny-random", "--max-new-tokens=100", "--json"]
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= REQUIRED_KEYS
    assert (data["files"], data["pages"], data["model_calls"]) == (1, 3, 3)
    assert data["max_output_tokens"] == 300 and data["cost_usd"] is None
    priced = [*argv, "--price-input-per-mtok=2", "--price-output-per-mtok=10"]
    assert cli.main(priced) == 0
    cost = json.loads(capsys.readouterr().out)["cost_usd"]
    assert cost == pytest.approx((data["input_tokens"] * 2 + 300 * 10) / 1e6)


PRICES = ["--price-input-per-mtok=1", "--price-output-per-mtok=1"]


def _api(server: FakeApiServer, *extra: str) -> list[str]:
    return ["--backend=openai", "--provider=openai", f"--base-url={server.base_url}",
            "--api-model=m", "--api-key-env=", "--no-preflight", *PRICES, *extra]  # fmt: skip


def test_max_cost_refuses_at_launch_with_the_figures(tmp_path, tiny_model, capsys):
    pdf = _pdf(tmp_path / "ten.pdf", 10)
    out = tmp_path / "out"
    with FakeApiServer() as server:
        argv = [f"--input={pdf}", f"--output={out}", *_api(server, "--max-cost=0.001")]
        with pytest.raises(BudgetExceeded, match=r"refusing to start.*10 model calls"):
            run_job([str(pdf)], out, *_api(server, "--max-cost=0.001"))
        assert cli.main(["run", *argv]) == cli.EXIT_BUDGET
        assert "exceeds --max-cost $0.001" in capsys.readouterr().err
        assert server.model_requests() == []
    assert not out.exists()


@pytest.mark.timeout(300)
def test_max_cost_stops_sending_once_the_spend_reaches_it(tmp_path, tiny_model):
    """Each call reports 10,000 input + 16 output tokens at $1/M: $0.010016 a call, so a
    $0.05 budget is reached by the 5th answer; no request goes out after it beyond those
    already in flight (at most `capacity` = 2 x --max-concurrency outstanding)."""
    pages = 30
    pdf = _pdf(tmp_path / "thirty.pdf", pages)
    out = tmp_path / "out"

    def answer(rec):
        return Answer(text="# page", prompt_tokens=10_000, completion_tokens=16)

    with FakeApiServer(answer) as server:
        flags = _api(server, "--max-cost=0.05", "--max-concurrency=1", "--max-new-tokens=16")
        with pytest.raises(BudgetExceeded, match="stopped at the budget"):
            run_job([str(pdf)], out, *flags)
        sent = len(server.model_requests())
    assert 5 <= sent <= 5 + 2
    rows, failures = read_table(out, "pages"), read_table(out, "failures")
    refused = [f for f in failures if f["error_type"] == "BudgetExceeded"]
    assert len(rows) == sent and len(refused) == pages - sent  # every page once
    assert {f["stage"] for f in refused} == {"inference"}
    assert sorted([r["page_number"] for r in rows] + [f["unit"] for f in refused]) == list(
        range(1, pages + 1)
    )
    manifest = counters_from_manifest(out)
    assert manifest["units_planned"] == pages and manifest["units_done"] == pages
    assert manifest["units_failed"] == pages - sent
    assert manifest["spend_nano_usd"] == sent * 10_016_000


def test_progress_log_lines_without_a_terminal(tmp_path, caplog):
    pdf = _pdf(tmp_path / "four.pdf", 4)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="vlbeam.pipeline.progress_display"):
        result = run_job([str(pdf)], out, "--progress=bar", "--progress-interval-s=0.05",
                         *PRICES, handler=fake_handler())  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("progress_display")]
    assert lines and lines[-1].startswith("progress: 4/4 units done (0 failed)")
    assert "pages/s" in lines[-1] and "spend $" in lines[-1] and "ETA" in lines[-1]
    values = counters(result)  # the same figures as Beam counters, for any runner's UI
    assert values["units_planned"] == values["units_done"] == 4
    assert values["tokens"] == 4 * (10 + 3)  # the test double's usage per call
    assert values["spend_nano_usd"] == 4 * 13_000
    [manifest] = (out / "_runs").glob("*.json")
    assert json.loads(manifest.read_text())["status"] == "succeeded"


def test_no_progress_and_no_budget_make_no_ledger(tmp_path):
    pdf = _pdf(tmp_path / "one.pdf", 1)
    out = tmp_path / "out"
    result = run_job([str(pdf)], out, "--progress=none", handler=fake_handler())
    assert counters(result)["units_done"] == 1  # Beam counters still count
    assert not list(out.rglob("_ledger"))
