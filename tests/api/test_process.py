"""`vlbeam.Process` composed in a caller's pipeline (TestPipeline + assert_that): URIs as strings
and as dicts carrying keys, every table's rows checked against its schema, `meta` on every row
that comes from a keyed input, ids of the same file listed with different keys, schema'd rows
for `beam.Select`, and the CLI giving the same rows as the transform."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

import vlbeam
from tests.api.helpers import (
    all_of,
    answers,
    api_flags,
    check,
    copy_samples,
    fits_schema,
    video_flags,
)
from tests.fake_api_server import FakeApiServer
from tests.pipeline_helpers import fake_handler, grounding_or_page_answers, run_job

CAT = {"customer_id": "c-7", "batch": "3"}  # what the keyed inputs carry, as strings


def _name(uri: str) -> str:
    return Path(uri).name


def _meta_by_file(expected: dict[str, dict | None], table: str):
    """A matcher: each row's `meta` is what its file's input carried."""

    def match(rows):
        for row in rows:
            want = expected[_name(row["source_uri"]) if row["source_uri"] else ""]
            check(row["meta"] == want, f"{table}: {row['source_uri']} meta {row['meta']} != {want}")

    return match


def _covers(table: str, names: set[str]):
    def match(rows):
        seen = {_name(r["source_uri"]) for r in rows}
        check(seen == names, f"{table}: rows from {sorted(seen)}, expected {sorted(names)}")

    return match


def test_uris_and_keyed_dicts_through_a_hosted_api(tmp_path):
    """Strings and dicts in one PCollection; every table has rows, fits its schema, and
    carries the keys of the input its rows came from (none for the plain string)."""
    uris = copy_samples(tmp_path / "in")
    missing = str(tmp_path / "in" / "gone.pdf")
    (tmp_path / "in" / "notes.txt").write_text("not a document\n")
    inputs = [
        uris["born_digital.pdf"],  # a plain URI: no meta
        {"uri": uris["scanned_page.pdf"], "customer_id": "c-7", "batch": 3},
        {"uri": uris["red_square.mp4"], "customer_id": "c-7", "batch": 3},
        {"uri": missing, "customer_id": "c-7", "batch": 3},  # no file there
        {"uri": str(tmp_path / "in" / "notes.txt"), "customer_id": "c-7", "batch": 3},
        {"customer_id": "c-7", "batch": 3},  # names no file
    ]
    expected = {"born_digital.pdf": None, "": CAT} | {
        name: CAT for name in ("scanned_page.pdf", "red_square.mp4", "gone.pdf", "notes.txt")
    }
    with FakeApiServer(answers) as server:
        process = vlbeam.Process(api_flags(server, *video_flags()), run_id="api-1")
        with TestPipeline() as p:
            results = p | beam.Create(inputs, reshuffle=False) | process
            assert isinstance(results, vlbeam.ProcessResult)
            assert list(results) == list(vlbeam.TABLES)
            for table, rows in results.items():
                assert_that(
                    rows,
                    all_of(
                        fits_schema(table, vlbeam.TABLES[table]),
                        _meta_by_file(expected, table),
                    ),
                    label=f"Check_{table}",
                )
            assert_that(
                results.pages,
                _covers("pages", {"born_digital.pdf", "scanned_page.pdf"}),
                label="PagesOfBoth",
            )
            assert_that(
                results.video_windows, _covers("video_windows", {"red_square.mp4"}), label="Win"
            )
            assert_that(
                results.video_events, _covers("video_events", {"red_square.mp4"}), label="Ev"
            )
            assert_that(
                results.failures | beam.Map(lambda f: (_name(f["source_uri"]), f["error_type"])),
                equal_to(
                    [
                        ("gone.pdf", "FileNotFound"),
                        ("notes.txt", "UnsupportedInput"),
                        ("", "InvalidInput"),
                    ]
                ),
                label="Failures",
            )
            assert_that(
                results.documents | beam.Map(lambda d: (_name(d["source_uri"]), d["status"])),
                equal_to(
                    [
                        ("born_digital.pdf", "ok"),
                        ("scanned_page.pdf", "ok"),
                        ("red_square.mp4", "ok"),
                        ("gone.pdf", "failed"),
                        ("notes.txt", "failed"),
                    ]
                ),
                label="Documents",
            )
        assert server.model_requests()  # the pages and windows went to the API


@pytest.mark.slow
def test_tiny_local_model_carries_meta_to_windows_and_parse_failures(tmp_path, tiny_model):
    """The real transformers path: the tiny random model's garbage answers make every window
    a `parse` failure; windows and failures still carry the video's keys, and pages the
    PDF's."""
    uris = copy_samples(tmp_path / "in")
    inputs = [
        {"uri": uris["born_digital.pdf"], "customer_id": "c-7", "batch": "3"},
        {"uri": uris["red_square.mp4"], "customer_id": "c-7", "batch": "3"},
    ]
    flags = ["--model", "tiny-random", "--max-new-tokens", "4", "--target-long-side", "256",
             *video_flags()]  # fmt: skip
    expected = {"born_digital.pdf": CAT, "red_square.mp4": CAT}
    with TestPipeline() as p:
        results = p | beam.Create(inputs) | vlbeam.Process(flags, run_id="tiny-1")
        for table, rows in results.items():
            assert_that(
                rows,
                all_of(fits_schema(table, vlbeam.TABLES[table]), _meta_by_file(expected, table)),
                label=f"Check_{table}",
            )
        assert_that(results.video_windows, _covers("video_windows", {"red_square.mp4"}))
        assert_that(
            results.failures | beam.Map(lambda f: (f["stage"], _name(f["source_uri"]))),
            lambda rows: check(
                set(rows) == {("parse", "red_square.mp4")} and len(rows) == 3,
                f"expected a parse failure per window, got {rows}",
            ),
            label="ParseFailures",
        )
        assert_that(results.pages, _covers("pages", {"born_digital.pdf"}), label="Pages")


def test_the_same_file_with_other_keys_is_another_document(tmp_path):
    """Listed twice with different keys: two documents, two ids (document_id of the content
    hash and the keys); with the same keys twice: one; with none: the content hash."""
    uris = copy_samples(tmp_path / "in")
    pdf = uris["born_digital.pdf"]
    sha = hashlib.sha256(Path(pdf).read_bytes()).hexdigest()
    inputs = [pdf, {"uri": pdf, "customer_id": "a"}, {"uri": pdf, "customer_id": "b"},
              {"uri": pdf, "customer_id": "b"}]  # fmt: skip
    ids = {
        None: sha,
        "a": vlbeam.document_id(sha, (("customer_id", "a"),)),
        "b": vlbeam.document_id(sha, (("customer_id", "b"),)),
    }
    assert len(set(ids.values())) == 3
    assert ids["a"] == hashlib.sha256(f'{sha}\n{{"customer_id":"a"}}'.encode()).hexdigest()

    def customer(row):
        return (row["meta"] or {}).get("customer_id"), row["doc_id"]

    with TestPipeline() as p:
        process = vlbeam.Process(["--tasks", "ocr"], backend=fake_handler())
        results = p | beam.Create(inputs) | process
        expected = sorted(ids.items(), key=str)
        assert_that(results.documents | "DocIds" >> beam.Map(customer), equal_to(expected))
        assert_that(
            results.pages | "PageIds" >> beam.Map(customer), equal_to(expected), label="Pages"
        )
        # assembled per input (uri, keys), not per file: one document_text row each
        assert_that(
            results.document_text | "TextIds" >> beam.Map(customer),
            equal_to(expected),
            label="DocumentText",
        )


def test_as_rows_gives_schemad_rows_that_beam_select_takes(tmp_path):
    uris = copy_samples(tmp_path / "in")
    inputs = [{"uri": uris["born_digital.pdf"], "customer_id": "c-7"}]
    with TestPipeline() as p:
        results = (
            p
            | beam.Create(inputs)
            | vlbeam.Process(["--tasks", "ocr"], backend=fake_handler(), as_rows=True)
        )
        assert results.pages.element_type is vlbeam.row_type("pages")
        selected = results.pages | beam.Select(
            "page_number", customer=lambda row: row.meta["customer_id"]
        )
        assert_that(
            selected | beam.Map(lambda r: (r.page_number, r.customer)), equal_to([(1, "c-7")])
        )
        # and back: the rows' fields are the table's columns, in order
        assert_that(
            results.documents | beam.Map(lambda r: tuple(r._fields)),
            equal_to([tuple(vlbeam.TABLES["documents"].names)]),
            label="Fields",
        )


def _tables(out: Path) -> dict[str, list[dict]]:
    return {
        t: sorted(
            pq.read_table(out / t).drop_columns(["run"]).to_pylist(maps_as_pydicts="strict"),
            key=repr,
        )
        for t in vlbeam.TABLES
    }


def test_the_cli_and_the_transform_give_the_same_rows(tmp_path):
    """`vlbeam run --input-manifest` and `Process` + `WriteTables` + `publish` over the same
    inputs, run id and model: the same rows in every table."""
    uris = copy_samples(tmp_path / "in")
    rows = [
        {"uri": uris["born_digital.pdf"], "customer_id": "c-1"},
        {"uri": uris["red_square.mp4"], "customer_id": "c-2"},
        {"uri": str(tmp_path / "in" / "gone.pdf"), "customer_id": "c-3"},
    ]
    manifest = tmp_path / "inputs.jsonl"
    manifest.write_text("".join(f'{{"uri": "{r["uri"]}", "customer_id": "{r["customer_id"]}"}}\n'
                                for r in rows))  # fmt: skip
    flags = ["--run-id", "same-1", *video_flags()]
    handler = fake_handler(grounding_or_page_answers)

    cli_out = tmp_path / "cli"
    run_job([], cli_out, f"--input-manifest={manifest}", *flags, handler=handler)

    api_out = tmp_path / "api"
    process = vlbeam.Process(flags, backend=handler)
    assert process.run_id == "same-1"
    with TestPipeline() as p:
        p | beam.Create(rows) | process | vlbeam.WriteTables(str(api_out), process.run_id)
    vlbeam.publish(str(api_out), process.run_id)

    cli, api = _tables(cli_out), _tables(api_out)
    for table in vlbeam.TABLES:
        for row in (*cli[table], *api[table]):
            row.pop("latency_s", None)
        assert cli[table] == api[table], table
    assert {r["meta"]["customer_id"] for r in cli["documents"]} == {"c-1", "c-2", "c-3"}
    assert cli["pages"] and cli["video_windows"] and cli["video_events"] and cli["failures"]


def test_settings_as_config_objects(tmp_path):
    uris = copy_samples(tmp_path / "in")
    settings = vlbeam.Settings(job=vlbeam.JobConfig(tasks="ocr"))
    process = vlbeam.Process(settings, backend=fake_handler(), run_id="cfg-1",
                             render=vlbeam.RenderConfig(target_long_side=300))  # fmt: skip
    assert process.settings.render.target_long_side == 300
    with TestPipeline() as p:
        results = p | beam.Create([uris["born_digital.pdf"], uris["red_square.mp4"]]) | process
        assert_that(
            results.pages | beam.Map(lambda r: (max(r["width_px"], r["height_px"]), r["run_id"])),
            equal_to([(300, "cfg-1")]),
        )
        assert_that(  # grounding is off: the video is a `task` failure
            results.failures | beam.Map(lambda f: f["error_type"]),
            equal_to(["TaskNotEnabled"]),
            label="Failures",
        )


def test_wrong_settings_fail_at_construction(tmp_path):
    with pytest.raises(ValueError, match="did you mean --max-concurrency"):
        vlbeam.Process(["--max-concurency", "3"])
    with pytest.raises(TypeError, match="list of flag strings"):
        vlbeam.Process("--tasks ocr")
    bad = tmp_path / "m.csv"
    bad.write_text("path,customer_id\na.pdf,1\n")
    with pytest.raises(ValueError, match="needs a 'uri' column"):
        vlbeam.Process(["--input-manifest", str(bad)])
    with pytest.raises(ValueError, match="no inputs"), TestPipeline() as p:
        p | vlbeam.Process(["--tasks", "ocr"], backend=fake_handler())
