"""`--input-manifest`: CSV, JSON Lines and Parquet manifests read with pyarrow's readers, the
`uri` column and the carried ones; and through `vlbeam run`, `meta` on every table's rows and a
missing file as a `FileNotFound` failure."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.api.helpers import copy_samples, video_flags
from tests.pipeline_helpers import fake_handler, grounding_or_page_answers, run_job
from vlbeam.schemas import TABLES
from vlbeam.transforms.input_manifest import manifest_columns, manifest_format, manifest_rows


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """`rows` in the format `path`'s name says."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".csv"):
        header = list(rows[0])
        lines = [",".join(header)] + [",".join(str(r[k]) for k in header) for r in rows]
        data = ("\n".join(lines) + "\n").encode()
    elif name.endswith(".jsonl"):
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.csv", "csv"),
        ("a.CSV.gz", "csv"),
        ("a.jsonl", "json"),
        ("a.ndjson", "json"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
    ],
)
def test_the_format_comes_from_the_name(name, kind):
    assert manifest_format(f"gs://b/{name}") == kind


@pytest.mark.parametrize("name", ["a.txt", "a.parquet.gz", "manifest"])
def test_an_unknown_manifest_name_is_refused(name):
    with pytest.raises(ValueError, match=r"name it \.csv"):
        manifest_format(name)


@pytest.mark.parametrize("name", ["m.csv", "m.csv.gz", "m.jsonl", "m.parquet"])
def test_rows_are_read_with_every_column(tmp_path, name):
    path = write_manifest(
        tmp_path / name,
        [
            {"uri": "a.pdf", "customer_id": "007", "n": 1},
            {"uri": "b.pdf", "customer_id": "8", "n": 2},
        ],
    )
    assert manifest_columns(str(path)) == ["uri", "customer_id", "n"]
    rows = list(manifest_rows(str(path)))
    assert [r["uri"] for r in rows] == ["a.pdf", "b.pdf"]
    if name.startswith("m.csv"):  # CSV cells are text: the leading zero stays
        assert rows[0] == {"uri": "a.pdf", "customer_id": "007", "n": "1"}
    else:
        assert rows[0] == {"uri": "a.pdf", "customer_id": "007", "n": 1}


def test_a_manifest_without_uri_or_unreadable_stops_the_job_before_it_starts(tmp_path):
    no_uri = write_manifest(tmp_path / "m.csv", [{"path": "a.pdf"}])
    with pytest.raises(ValueError, match="needs a 'uri' column"):
        manifest_columns(str(no_uri))
    with pytest.raises(ValueError, match="cannot read it"):
        manifest_columns(str(tmp_path / "absent.parquet"))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="needs a 'uri' column"):
        run_job([], out, f"--input-manifest={no_uri}", handler=fake_handler())
    assert not out.exists()


@pytest.mark.parametrize("name", ["inputs.csv", "inputs.jsonl", "inputs.parquet"])
def test_vlbeam_run_with_a_manifest_carries_meta_to_every_table(tmp_path, name):
    uris = copy_samples(tmp_path / "in")
    rows = [
        {"uri": uris["born_digital.pdf"], "customer_id": "c-001", "batch": "7"},
        {"uri": uris["red_square.mp4"], "customer_id": "c-002", "batch": "7"},
        {"uri": str(tmp_path / "in" / "missing.pdf"), "customer_id": "c-003", "batch": "7"},
    ]
    manifest = write_manifest(tmp_path / name, rows)
    out = tmp_path / "out"
    run_job([], out, f"--input-manifest={manifest}", *video_flags(),
            handler=fake_handler(grounding_or_page_answers))  # fmt: skip
    carried = {Path(r["uri"]).name: {"customer_id": r["customer_id"], "batch": "7"} for r in rows}
    tables = {t: pq.read_table(out / t).to_pylist(maps_as_pydicts="strict") for t in TABLES}
    for table, found in tables.items():
        # every table has rows, but tables, figures and extractions (QwenVL HTML answers with
        # tables, --figures crop, --extract: tests/api, tests/e2e/test_document_data.py and
        # tests/extract carry meta there)
        assert found or table in ("tables", "figures", "extractions"), table
        for row in found:
            assert row["meta"] == carried[Path(row["source_uri"]).name], (table, row)
    docs = {Path(d["source_uri"]).name: d["status"] for d in tables["documents"]}
    assert docs == {"born_digital.pdf": "ok", "red_square.mp4": "ok", "missing.pdf": "failed"}
    [failure] = tables["failures"]
    assert (failure["stage"], failure["error_type"]) == ("ingest", "FileNotFound")
    assert Path(failure["source_uri"]).name == "missing.pdf"


def test_patterns_and_a_manifest_together(tmp_path):
    """--input rows carry no meta; the manifest's do; the same file from both is two
    documents (one without keys, one with)."""
    uris = copy_samples(tmp_path / "in")
    manifest = write_manifest(tmp_path / "m.csv", [{"uri": uris["born_digital.pdf"], "k": "v"}])
    out = tmp_path / "out"
    run_job([uris["born_digital.pdf"]], out, f"--input-manifest={manifest}", "--tasks=ocr",
            handler=fake_handler())  # fmt: skip
    docs = pq.read_table(out / "documents").to_pylist(maps_as_pydicts="strict")
    assert sorted(str(d["meta"]) for d in docs) == ["None", "{'k': 'v'}"]
    assert len({d["doc_id"] for d in docs}) == 2
