"""publish: staged tables replace the published ones in one step."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vlbeam.pipeline.output import STAGING, publish, staging_dir
from vlbeam.schemas import FAILURES, PAGES, TABLES

RUN_ID = "20261122T083000Z-abc123"


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
            "model": "m",
            "backend": "transformers",
            "prompt_id": "p",
            "input_tokens": 1,
            "output_tokens": 2,
            "finish_reason": "stop",
            "latency_s": 0.1,
            "run_id": tag,
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=PAGES)


def _stage(out: Path, table: str, name: str, data: pa.Table) -> Path:
    folder = Path(staging_dir(str(out), RUN_ID)) / table
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, folder / name)
    return folder / name


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_staging_dir_layout(tmp_path: Path) -> None:
    assert staging_dir(str(tmp_path), RUN_ID) == f"{tmp_path}/{STAGING}/{RUN_ID}"


def test_publish_replaces_old_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old_pages = out / "pages"
    old_pages.mkdir(parents=True)
    pq.write_table(_page_rows(3, "old"), old_pages / "part-00000-of-00002.parquet")
    pq.write_table(_page_rows(3, "old"), old_pages / "part-00001-of-00002.parquet")
    (old_pages / "notes.txt").write_text("stale")
    _stage(out, "pages", "part-00000-of-00001.parquet", _page_rows(2, "new"))

    published = publish(str(out), RUN_ID, {"pages": PAGES})

    assert _listing(out / "pages") == ["part-00000-of-00001.parquet"]
    assert published == {"pages": [str(out / "pages" / "part-00000-of-00001.parquet")]}
    table = pq.read_table(out / "pages")
    assert table.num_rows == 2
    assert set(table.column("run_id").to_pylist()) == {"new"}
    assert not (out / STAGING).exists()


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
        assert _listing(out / name) == ["part-empty.parquet"], name
        assert published[name] == [str(out / name / "part-empty.parquet")]
        table = pq.read_table(out / name / "part-empty.parquet")
        assert table.num_rows == 0
        assert table.schema.equals(schema, check_metadata=False), name
    assert pq.read_table(out / "pages").num_rows == 1
    assert not (out / STAGING).exists()


def test_publish_moves_only_parquet_and_cleans_staging(tmp_path: Path) -> None:
    out = tmp_path / "out"
    staged = _stage(out, "pages", "part-00000-of-00001.parquet", _page_rows(1, "new"))
    (staged.parent / "beam-temp-leftover").write_text("x")

    publish(str(out), RUN_ID, {"pages": PAGES})

    assert _listing(out / "pages") == ["part-00000-of-00001.parquet"]
    assert not (out / STAGING).exists()


def test_publish_leaves_other_runs_staging_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _stage(out, "pages", "part-00000-of-00001.parquet", _page_rows(1, "new"))
    other = out / STAGING / "other-run" / "pages"
    other.mkdir(parents=True)
    (other / "part-0.parquet").write_bytes(b"in progress")

    publish(str(out), RUN_ID, {"pages": PAGES})

    assert not (out / STAGING / RUN_ID).exists()
    assert (other / "part-0.parquet").read_bytes() == b"in progress"


def test_publish_twice_is_idempotent_for_empty_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    publish(str(out), RUN_ID, TABLES)
    publish(str(out), RUN_ID, TABLES)
    for name in TABLES:
        assert _listing(out / name) == ["part-empty.parquet"]
    assert not (out / STAGING).exists()
