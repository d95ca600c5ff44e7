"""Every table as engines read it: pyarrow.dataset with Hive partitioning and DuckDB see exactly
the declared column types (the `run` partition a string); every file is zstd-compressed,
carries the schema version, and declares list elements required."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.pipeline_helpers import (
    SAMPLES_GLOB,
    fake_handler,
    grounding_or_page_answers,
    run_job,
)
from tests.video_fixtures import constant_rate, write_video
from vlbeam.schemas import SCHEMA_VERSION, TABLE_KEY, TABLES, VERSION_KEY

SAMPLES = Path(SAMPLES_GLOB).parent

# What DuckDB reports for each column (information_schema data_type), written out rather
# than derived, so a schema change shows up here and in the README's type table.
DUCKDB_TYPES = {
    "documents": {
        "doc_id": "VARCHAR", "source_uri": "VARCHAR", "kind": "VARCHAR",
        "size_bytes": "BIGINT", "status": "VARCHAR", "num_pages": "INTEGER",
        "duration_s": "DOUBLE", "num_failures": "INTEGER", "model": "VARCHAR",
        "backend": "VARCHAR", "prompt_id": "VARCHAR", "run_id": "VARCHAR",
        "meta": "MAP(VARCHAR, VARCHAR)",
    },
    "pages": {
        "doc_id": "VARCHAR", "source_uri": "VARCHAR", "page_number": "INTEGER",
        "width_px": "INTEGER", "height_px": "INTEGER", "text": "VARCHAR",
        "text_layer": "VARCHAR", "text_source": "VARCHAR", "quality_flags": "VARCHAR[]",
        "text_layer_agreement": "DOUBLE", "retries": "INTEGER",
        "page_meta": "STRUCT(primary_language VARCHAR, is_rotation_valid BOOLEAN, "
        "rotation_correction INTEGER, is_table BOOLEAN, is_diagram BOOLEAN, rotation INTEGER)",
        "model": "VARCHAR",
        "backend": "VARCHAR",
        "prompt_id": "VARCHAR", "input_tokens": "INTEGER", "output_tokens": "INTEGER",
        "finish_reason": "VARCHAR", "latency_s": "DOUBLE", "provider": "VARCHAR",
        "served_model": "VARCHAR", "request_id": "VARCHAR", "reasoning": "VARCHAR",
        "cost_usd": "DOUBLE", "run_id": "VARCHAR",
        "meta": "MAP(VARCHAR, VARCHAR)",
    },
    "video_windows": {
        "doc_id": "VARCHAR", "source_uri": "VARCHAR", "window_index": "INTEGER",
        "start_s": "DOUBLE", "end_s": "DOUBLE", "frame_times_s": "DOUBLE[]",
        "num_frames": "INTEGER", "model": "VARCHAR", "backend": "VARCHAR",
        "prompt_id": "VARCHAR", "raw_output": "VARCHAR", "quality_flags": "VARCHAR[]",
        "input_tokens": "INTEGER",
        "output_tokens": "INTEGER", "finish_reason": "VARCHAR", "latency_s": "DOUBLE",
        "provider": "VARCHAR", "served_model": "VARCHAR", "request_id": "VARCHAR",
        "reasoning": "VARCHAR", "cost_usd": "DOUBLE", "grounding_pass": "VARCHAR",
        "candidate_queries": "VARCHAR[]", "coarse_windows": "INTEGER[]", "run_id": "VARCHAR",
        "meta": "MAP(VARCHAR, VARCHAR)",
    },
    "video_events": {
        "doc_id": "VARCHAR", "source_uri": "VARCHAR", "query": "VARCHAR",
        "start_s": "DOUBLE", "end_s": "DOUBLE", "description": "VARCHAR",
        "window_indexes": "INTEGER[]", "coarse_window_indexes": "INTEGER[]",
        "model": "VARCHAR", "prompt_id": "VARCHAR", "run_id": "VARCHAR",
        "meta": "MAP(VARCHAR, VARCHAR)",
    },
    "failures": {
        "source_uri": "VARCHAR", "doc_id": "VARCHAR", "stage": "VARCHAR", "unit": "INTEGER",
        "error_type": "VARCHAR", "message": "VARCHAR", "run_id": "VARCHAR",
        "meta": "MAP(VARCHAR, VARCHAR)",
    },
    "blocks": {
        "doc_id": "VARCHAR", "source_uri": "VARCHAR", "page_number": "INTEGER",
        "block_index": "INTEGER", "category": "VARCHAR",
        "bbox": "STRUCT(x0 DOUBLE, y0 DOUBLE, x1 DOUBLE, y1 DOUBLE)", "bbox_unit": "VARCHAR",
        "text": "VARCHAR", "html": "VARCHAR", "text_source": "VARCHAR", "model": "VARCHAR",
        "backend": "VARCHAR", "prompt_id": "VARCHAR", "run_id": "VARCHAR",
        "meta": "MAP(VARCHAR, VARCHAR)",
    },
    "tables": {
        "doc_id": "VARCHAR", "source_uri": "VARCHAR", "page_numbers": "INTEGER[]",
        "table_index": "INTEGER", "html": "VARCHAR", "header": "VARCHAR[]",
        "rows": "VARCHAR[][]", "n_rows": "INTEGER", "n_cols": "INTEGER",
        "bbox": "STRUCT(x0 DOUBLE, y0 DOUBLE, x1 DOUBLE, y1 DOUBLE)", "bbox_unit": "VARCHAR",
        "model": "VARCHAR", "prompt_id": "VARCHAR", "run_id": "VARCHAR",
        "meta": "MAP(VARCHAR, VARCHAR)",
    },
    "figures": {
        "doc_id": "VARCHAR", "source_uri": "VARCHAR", "page_number": "INTEGER",
        "figure_index": "INTEGER",
        "bbox": "STRUCT(x0 DOUBLE, y0 DOUBLE, x1 DOUBLE, y1 DOUBLE)", "bbox_unit": "VARCHAR",
        "caption": "VARCHAR", "image": "BLOB", "width_px": "INTEGER", "height_px": "INTEGER",
        "sha256": "VARCHAR", "model": "VARCHAR", "prompt_id": "VARCHAR", "run_id": "VARCHAR",
        "meta": "MAP(VARCHAR, VARCHAR)",
    },
    "document_text": {
        "doc_id": "VARCHAR", "source_uri": "VARCHAR", "text": "VARCHAR",
        "page_spans": 'STRUCT(page_number INTEGER, "start" BIGINT, "end" BIGINT)[]',
        "missing_pages": "INTEGER[]", "removed": "VARCHAR[]", "status": "VARCHAR",
        "model": "VARCHAR", "prompt_id": "VARCHAR", "run_id": "VARCHAR",
        "meta": "MAP(VARCHAR, VARCHAR)",
    },
    "extractions": {
        "doc_id": "VARCHAR", "source_uri": "VARCHAR", "scope": "VARCHAR",
        "page_number": "INTEGER", "schema_id": "VARCHAR", "json": "VARCHAR",
        "valid": "BOOLEAN", "errors": "VARCHAR[]", "attempts": "INTEGER", "guided": "VARCHAR",
        "extract_from": "VARCHAR", "chunks": "INTEGER", "field_chunks": "VARCHAR",
        "model": "VARCHAR", "backend": "VARCHAR", "prompt_id": "VARCHAR",
        "input_tokens": "INTEGER", "output_tokens": "INTEGER", "finish_reason": "VARCHAR",
        "latency_s": "DOUBLE", "provider": "VARCHAR", "served_model": "VARCHAR",
        "request_id": "VARCHAR", "reasoning": "VARCHAR", "cost_usd": "DOUBLE",
        "run_id": "VARCHAR", "meta": "MAP(VARCHAR, VARCHAR)",
    },
}  # fmt: skip

# pages answer QwenVL HTML with a table and a figure, so every table gets rows
HTML_PAGE = (
    '<h1 data-bbox="100 50 900 90">Page</h1>'
    '<div class="image" data-bbox="100 100 600 500"></div>'
    '<div class="table" data-bbox="100 600 900 800"><table><tr><th>a</th><th>b</th></tr>'
    "<tr><td>1</td><td>2</td></tr></table></div>"
)


def html_or_grounding_answers(model, batch, cfg):
    answers = grounding_or_page_answers(model, batch, cfg)
    return [
        a if r.frame_times_s else dataclasses.replace(a, text=HTML_PAGE)
        for r, a in zip(batch, answers, strict=True)
    ]


RUN_IDS = ("nightly-20261201", None)  # an explicit id with a date in it, and the default


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    """Two runs side by side, every table with rows: a PDF, a video, a file that fails."""
    src = tmp_path_factory.mktemp("in")
    out = tmp_path_factory.mktemp("out") / "out"
    shutil.copy(SAMPLES / "born_digital.pdf", src / "a.pdf")
    write_video(src / "clip.mp4", constant_rate(6, 10), None)
    (src / "notes.txt").write_text("not a document\n")
    schema = tmp_path_factory.mktemp("schema") / "title.schema.json"
    schema.write_text('{"type": "object", "properties": {"title": {"type": "string"}}}')
    for run_id in RUN_IDS:
        extra = ["--output-mode=append", "--query=a door opens", "--ocr-format=html",
                 "--figures=crop", f"--extract={schema}"]  # fmt: skip
        extra += [f"--run-id={run_id}"] if run_id else []
        run_job([f"{src}/*"], out, *extra, handler=fake_handler(html_or_grounding_answers))
    return out


def test_every_table_has_rows_in_both_runs(output: Path) -> None:
    for table in TABLES:
        runs = sorted(p.name for p in (output / table).iterdir())
        assert len(runs) == 2, (table, runs)
        assert "run=nightly-20261201" in runs
        assert ds.dataset(output / table, partitioning="hive").count_rows() >= 2, table


@pytest.mark.parametrize("table", list(TABLES))
def test_pyarrow_dataset_reads_exactly_the_declared_types(output: Path, table: str) -> None:
    dataset = ds.dataset(output / table, format="parquet", partitioning="hive")
    expected = TABLES[table].append(pa.field("run", pa.string()))
    got = dataset.schema
    assert got.names == expected.names
    for want in expected:
        have = got.field(want.name)
        assert have.type == want.type, (want.name, have.type, want.type)
        assert have.nullable == want.nullable, want.name
        if pa.types.is_list(want.type):  # Spark: containsNull = false
            assert have.type.value_field.nullable is False, want.name
            assert have.type.value_field.name == "element"
    rows = dataset.to_table()
    assert set(rows.column("run").to_pylist()) == set(rows.column("run_id").to_pylist())


@pytest.mark.parametrize("table", list(TABLES))
def test_duckdb_reads_exactly_the_declared_types(output: Path, table: str) -> None:
    pattern = str(output / table / "run=*" / "*.parquet").replace("'", "''")
    scan = f"read_parquet('{pattern}', hive_partitioning = true)"
    with duckdb.connect() as con:
        types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
        runs = con.execute(f"SELECT DISTINCT run = run_id FROM {scan}").fetchall()
    assert types == {**DUCKDB_TYPES[table], "run": "VARCHAR"}
    assert runs == [(True,)]


def test_every_file_is_zstd_versioned_with_required_list_elements(output: Path) -> None:
    files = sorted(output.glob("*/run=*/*.parquet"))
    assert {f.parent.parent.name for f in files} == set(TABLES)
    for path in files:
        parquet = pq.ParquetFile(path)
        meta = parquet.metadata
        assert meta.metadata[VERSION_KEY.encode()] == SCHEMA_VERSION.encode(), path
        assert meta.metadata[TABLE_KEY.encode()] == path.parent.parent.name.encode()
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                assert meta.row_group(g).column(c).compression == "ZSTD", (path, c)
        text = re.sub(r"field_id=-?\d+ ", "", str(parquet.schema))
        assert re.search(r" element[ ;]", text) or "(List)" not in text
        assert "optional binary element" not in text  # quality_flags: required strings
        if path.parent.parent.name in ("pages", "video_windows"):
            assert "required binary element (String);" in text
        assert "optional double element;" not in text and "optional int32 element;" not in text
        if path.parent.parent.name == "video_windows":
            assert "required double element;" in text
        if path.parent.parent.name == "video_events":
            assert "required int32 element;" in text
