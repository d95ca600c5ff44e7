# ruff: noqa: E402  (the test dependency check runs before the imports that need it)
"""The run summary's estimated cost: the total and the cost per 1,000 pages, from the pure
formatter and from the counters of a real job priced with --price-*-per-mtok."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.conftest import require_module

require_module("aiohttp", "openai")

from tests.fake_api_server import Answer, FakeApiServer, Recorded, decode_data_uri
from tests.pipeline_helpers import inked_page, read_table, run_job
from vlbeam.pipeline.summary import format_summary


def summary(values: dict) -> list[str]:
    return format_summary(values, 1.0, "out", "r1").splitlines()


def test_cost_total_and_per_thousand_pages():
    lines = summary({"pages_ok": 400, "cost_micro_usd": 1_234_567,
                     "page_cost_nano_usd": 1_234_567_000, "model_loads": 1})  # fmt: skip
    assert "  cost:      $1.2346 (estimated, $3.0864 per 1,000 pages)" in lines
    # shown just before the model-load line, after failures
    assert lines.index("  cost:      $1.2346 (estimated, $3.0864 per 1,000 pages)") == (
        lines.index("  model loads: 1 (one per worker process)") - 1
    )
    assert lines[lines.index("  failures:  0") + 1].startswith("  cost:")


def test_cost_per_thousand_pages_is_total_over_pages_times_1000():
    lines = summary({"pages_ok": 3, "cost_micro_usd": 1_000, "page_cost_nano_usd": 1_000_000})
    assert "  cost:      $0.0010 (estimated, $0.3333 per 1,000 pages)" in lines
    lines = summary({"pages_ok": 1, "cost_micro_usd": 2_500_000,
                     "page_cost_nano_usd": 2_500_000_000})  # fmt: skip
    assert "  cost:      $2.5000 (estimated, $2500.0000 per 1,000 pages)" in lines


def test_cost_per_thousand_pages_counts_page_costs_only():
    """In a mixed run the video windows' cost is in the total, not in the per-page figure."""
    lines = summary({"pages_ok": 10, "cost_micro_usd": 5_000_000,  # $5: $1 pages + $4 video
                     "page_cost_nano_usd": 1_000_000_000})  # fmt: skip
    assert "  cost:      $5.0000 (estimated, $100.0000 per 1,000 pages)" in lines


def test_calls_avoided_cost_saved_and_flagged_pages():
    lines = summary({"pages_ok": 10, "cost_micro_usd": 2_000_000,
                     "page_cost_nano_usd": 2_000_000_000, "model_calls_avoided.blank": 2,
                     "model_calls_avoided.text_layer": 4, "pages_flagged.repetition": 1,
                     "pages_flagged.length": 3, "model_retries": 2})  # fmt: skip
    # 4 pages read by the model cost $2: $0.50 each, so 6 avoided calls saved about $3
    assert "  model calls avoided: 2 blank, 4 text layer; about $3.0000 saved" in lines
    assert "  flagged pages: length 3, repetition 1 (2 retries)" in lines


def test_no_pages_shows_the_total_only_and_no_price_shows_no_cost():
    assert "  cost:      $0.0500 (estimated)" in summary({"cost_micro_usd": 50_000})
    assert not [line for line in summary({"pages_ok": 10}) if "cost" in line]


WIDTHS = (120, 160, 200, 240, 300)  # one page each: each request costs something different


def sized_answer(rec: Recorded) -> Answer:
    """Prompt tokens = the width of the page image received, 20 completion tokens."""
    if rec.is_preflight:
        return Answer(text="OK", prompt_tokens=5, completion_tokens=1)
    [url] = rec.image_urls
    width = Image.open(io.BytesIO(decode_data_uri(url)[1])).size[0]
    return Answer(text=f"page {width}", prompt_tokens=width, completion_tokens=20)


def test_the_jobs_counters_add_up_to_the_tables_cost(tmp_path, capsys):
    pdf = tmp_path / "in" / "five.pdf"
    pdf.parent.mkdir()
    pages = [inked_page((w, 400)) for w in WIDTHS]
    pages[0].save(pdf, save_all=True, append_images=pages[1:])
    out = tmp_path / "out"
    with FakeApiServer(sized_answer) as server:
        run_job(
            [str(pdf)], out, "--backend=openai", "--provider=openai", "--api-model=m",
            f"--base-url={server.base_url}", "--api-key-env=", "--target-long-side=400",
            "--price-input-per-mtok=2", "--price-output-per-mtok=6", "--run-id=priced",
        )  # fmt: skip
        assert server.requests[0].is_preflight  # the key check ran, and is not billed below
    rows = read_table(out, "pages")
    assert len(rows) == len(WIDTHS) and read_table(out, "failures") == []
    # each page: width * $2 + 20 * $6 per million tokens (whole micro-dollars)
    assert sorted(round(r["cost_usd"] * 1e6) for r in rows) == [w * 2 + 120 for w in WIDTHS]
    total = sum(w * 2 + 120 for w in WIDTHS) / 1e6
    per_k = total / len(WIDTHS) * 1000
    printed = capsys.readouterr().out.splitlines()
    assert f"  cost:      ${total:.4f} (estimated, ${per_k:.4f} per 1,000 pages)" in printed
    assert "  cost:      $0.0026 (estimated, $0.5280 per 1,000 pages)" in printed
    manifest = json.loads((out / "_runs" / "priced.json").read_text())
    assert manifest["counts"]["cost_micro_usd"] == sum(w * 2 + 120 for w in WIDTHS)
    assert manifest["counts"]["pages_ok"] == len(WIDTHS)


def test_a_free_run_shows_no_cost(tmp_path, capsys):
    pdf = tmp_path / "one.pdf"
    inked_page((100, 100)).save(pdf)
    with FakeApiServer(sized_answer) as server:
        run_job([str(pdf)], tmp_path / "out", "--backend=openai", "--provider=openai",
                "--api-model=m", f"--base-url={server.base_url}", "--api-key-env=")  # fmt: skip
    printed = capsys.readouterr().out
    assert "  pages:     1 OCR'd of 1 rendered" in printed
    assert "  cost:" not in printed
    assert [r["cost_usd"] for r in read_table(tmp_path / "out", "pages")] == [None]


@pytest.mark.parametrize("pages_ok", [0, 1, 7])
def test_per_thousand_pages_matches_the_arithmetic(pages_ok):
    lines = summary({"pages_ok": pages_ok, "cost_micro_usd": 7_000_001,
                     "page_cost_nano_usd": 7_000_001_000})  # fmt: skip
    [line] = [line for line in lines if line.startswith("  cost:")]
    if pages_ok:
        per_k = 7.000001 / pages_ok * 1000
        assert line == f"  cost:      $7.0000 (estimated, ${per_k:.4f} per 1,000 pages)"
    else:
        assert line == "  cost:      $7.0000 (estimated)"


def test_the_summary_shows_units_and_spend():
    values = {"units_planned": 10, "units_done": 10, "units_failed": 3,
              "spend_nano_usd": 1_500_000_000}  # fmt: skip
    text = format_summary(values, 1.0, "out", "r1")
    assert "  units:     10 done of 10 planned (3 failed)" in text.splitlines()
    assert "  spend:     $1.5000 (estimated)" in text.splitlines()
