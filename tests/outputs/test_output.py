"""publish: staged tables replace the published ones in one step."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.pipeline_helpers import columns_of
from vlbeam.outputs.layout import STAGING, attempt_file_name, partition_dir, staging_dir
from vlbeam.outputs.publish import publish as publish_attempt
from vlbeam.schemas import FAILURES, PAGES, SCHEMA_VERSION, TABLE_KEY, TABLES, VERSION_KEY
from vlbeam.transforms.write import TEMP_FOLDER

RUN_ID = "20261122T083000Z-abc123"
ATTEMPT = "try-20261122T083000Z-0a1b2c3d"


def publish(output, run_id, tables, mode="overwrite"):
    return publish_attempt(output, run_id, tables, mode, attempt=ATTEMPT)


def named(name: str) -> str:
    return attempt_file_name(ATTEMPT, name)


def _page_rows(n: int, tag: str) -> pa.Table:
    rows = [
        {
            "doc_id": "0" * 64,
            "source_uri": f"/in/{tag}.pdf",
            "page_number": i + 1,
            "width_px": 100,
            "height_px": 200,
            "text": f"{tag} page {i + 1}",
            "text_layer": None,
            "text_source": "model",
            "quality_flags": [],
            "text_layer_agreement": None,
            "retries": 0,
            "model": "m",
            "backend": "transformers",
            "prompt_id": "p",
            "input_tokens": 1,
            "output_tokens": 2,
            "finish_reason": "stop",
            "latency_s": 0.1,
            "provider": None,
            "served_model": None,
            "request_id": None,
            "reasoning": None,
            "cost_usd": None,
            "run_id": tag,
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=PAGES)


def _stage(out: Path, table: str, name: str, data: pa.Table) -> Path:
    folder = Path(staging_dir(str(out), RUN_ID, ATTEMPT)) / table
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, folder / name)
    return folder / name


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_staging_dir_layout(tmp_path: Path) -> None:
    assert staging_dir(str(tmp_path), RUN_ID) == f"{tmp_path}/{STAGING}/{RUN_ID}"
    assert staging_dir(str(tmp_path), RUN_ID, ATTEMPT) == f"{tmp_path}/{STAGING}/{RUN_ID}/{ATTEMPT}"


def _part(out: Path, table: str, run_id: str = RUN_ID) -> Path:
    return Path(partition_dir(str(out), table, run_id))


def test_publish_replaces_old_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old_pages = out / "pages"
    old_pages.mkdir(parents=True)
    pq.write_table(_page_rows(3, "old"), old_pages / "part-00000-of-00002.parquet")  # flat
    older_run = _part(out, "pages", "older-run")
    older_run.mkdir(parents=True)
    pq.write_table(_page_rows(3, "old"), older_run / "part-00001-of-00002.parquet")
    _stage(out, "pages", "part-00000-of-00001.parquet", _page_rows(2, "new"))

    published = publish(str(out), RUN_ID, {"pages": PAGES})

    assert _listing(out / "pages") == [f"run={RUN_ID}"]
    assert _listing(_part(out, "pages")) == [named("part-00000-of-00001.parquet")]
    assert published == {"pages": [str(_part(out, "pages") / named("part-00000-of-00001.parquet"))]}
    table = pq.read_table(out / "pages")
    assert table.num_rows == 2
    assert set(table.column("run_id").to_pylist()) == {"new"}
    assert not (out / STAGING).exists()


def test_append_mode_keeps_earlier_runs_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "out"
    older_run = _part(out, "pages", "older-run")
    older_run.mkdir(parents=True)
    pq.write_table(_page_rows(3, "old"), older_run / "part-0.parquet")
    _stage(out, "pages", "part-00000-of-00001.parquet", _page_rows(2, "new"))

    publish(str(out), RUN_ID, {"pages": PAGES}, mode="append")

    assert _listing(out / "pages") == sorted([f"run={RUN_ID}", "run=older-run"])
    table = pq.read_table(out / "pages")
    assert sorted(table.column("run_id").to_pylist()) == ["new"] * 2 + ["old"] * 3


def test_publish_empty_tables_get_an_empty_file_with_the_schema(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "failures").mkdir(parents=True)
    pq.write_table(FAILURES.empty_table(), out / "failures" / "part-old.parquet")
    _stage(out, "pages", "part-00000-of-00001.parquet", _page_rows(1, "new"))

    published = publish(str(out), RUN_ID, TABLES)

    assert set(published) == set(TABLES)
    for name, schema in TABLES.items():
        if name == "pages":
            continue
        assert _listing(_part(out, name)) == [named("part-empty.parquet")], name
        assert _listing(out / name) == [f"run={RUN_ID}"], name
        assert published[name] == [str(_part(out, name) / named("part-empty.parquet"))]
        table = pq.read_table(_part(out, name) / named("part-empty.parquet"))
        assert table.num_rows == 0
        assert columns_of(table.schema) == columns_of(schema), name
    assert pq.read_table(out / "pages").num_rows == 1
    assert not (out / STAGING).exists()


def test_publish_moves_only_parquet_and_cleans_staging(tmp_path: Path) -> None:
    out = tmp_path / "out"
    staged = _stage(out, "pages", "part-00000-of-00001.parquet", _page_rows(1, "new"))
    (staged.parent / "beam-temp-leftover").write_text("x")
    bundles = staged.parent.parent / TEMP_FOLDER / "pages"  # a bundle the runner dropped
    bundles.mkdir(parents=True)
    pq.write_table(_page_rows(1, "dropped-bundle"), bundles / "0123abcd.parquet")

    publish(str(out), RUN_ID, {"pages": PAGES})

    assert _listing(_part(out, "pages")) == [named("part-00000-of-00001.parquet")]
    assert not (out / STAGING).exists()


def test_publish_leaves_running_attempts_staging_alone(tmp_path: Path) -> None:
    from vlbeam.outputs.attempt import AttemptRecord

    out = tmp_path / "out"
    _stage(out, "pages", "part-00000-of-00001.parquet", _page_rows(1, "new"))
    running = AttemptRecord(str(out), "other-run", "try-20261122T090000Z-00000001").start()
    other = out / STAGING / "other-run" / "try-20261122T090000Z-00000001" / "pages"
    other.mkdir(parents=True)
    (other / "part-0.parquet").write_bytes(b"in progress")
    dead = out / STAGING / "dead-run" / "try-20261122T070000Z-00000002" / "pages"
    dead.mkdir(parents=True)  # no running record, untouched for an hour: over
    (dead / "part-0.parquet").write_bytes(b"left by a killed run")
    os.utime(dead / "part-0.parquet", (time.time() - 3600, time.time() - 3600))
    young = out / STAGING / "new-run" / "try-20261122T100000Z-00000003" / "pages"
    young.mkdir(parents=True)  # no record yet, but just written: left alone
    (young / "part-0.parquet").write_bytes(b"just staged")

    publish(str(out), RUN_ID, {"pages": PAGES})

    assert not (out / STAGING / RUN_ID).exists()
    assert (other / "part-0.parquet").read_bytes() == b"in progress"
    assert not (out / STAGING / "dead-run").exists()
    assert (young / "part-0.parquet").exists()
    running.finish("failed")
    assert not (out / STAGING / "other-run").exists()  # a failed attempt removes its own


def test_publish_twice_is_idempotent_for_empty_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    publish(str(out), RUN_ID, TABLES)
    publish(str(out), RUN_ID, TABLES)
    for name in TABLES:
        assert _listing(_part(out, name)) == [named("part-empty.parquet")]
    assert not (out / STAGING).exists()


def test_empty_tables_are_written_like_every_other_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    publish(str(out), RUN_ID, TABLES)
    for name in TABLES:
        meta = pq.ParquetFile(_part(out, name) / named("part-empty.parquet")).metadata
        assert meta.metadata[VERSION_KEY.encode()] == SCHEMA_VERSION.encode()
        assert meta.metadata[TABLE_KEY.encode()] == name.encode()
        schema = pq.read_schema(_part(out, name) / named("part-empty.parquet"))
        assert columns_of(schema) == columns_of(TABLES[name]), name
        assert schema.metadata == TABLES[name].metadata, name
