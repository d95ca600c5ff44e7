"""The tables' file sink (`transforms/write.py`): only committed bundles' files are moved into
the table folders, the move can be retried, and rows are written in row groups with the
schema (and its metadata) of the table."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from tests.outputs.test_output import _page_rows
from tests.pipeline_helpers import columns_of
from vlbeam.schemas import PAGES
from vlbeam.transforms import write
from vlbeam.transforms.write import TEMP_FOLDER, _WriteBundleFiles, commit_files


def _bundle(dofn: _WriteBundleFiles, rows: list[dict], *, fail: bool = False) -> list[str]:
    dofn.start_bundle()
    for row in rows:
        dofn.process(("pages", row))
    if fail:  # the runner gives up on the bundle: no finish_bundle, the instance torn down
        dofn.teardown()
        return []
    return [value.value[1] for value in dofn.finish_bundle()]


def test_a_failed_bundles_file_is_never_committed_and_the_commit_can_be_retried(tmp_path: Path):
    folder = tmp_path / "staged"
    dofn = _WriteBundleFiles(str(folder / TEMP_FOLDER), {"pages": PAGES})
    assert _bundle(dofn, _page_rows(3, "lost").to_pylist(), fail=True) == []
    kept = _bundle(dofn, _page_rows(1500, "kept").to_pylist())  # two record batches
    assert len(kept) == 1

    table, paths = commit_files(("pages", kept), str(folder))
    again = commit_files(("pages", kept), str(folder))  # the commit step retried

    assert table == "pages" and again == (table, paths)
    assert [Path(p).parent for p in paths] == [folder / "pages"]
    read = pq.read_table(folder / "pages")
    assert read.num_rows == 1500 and set(read.column("run_id").to_pylist()) == {"kept"}
    [abandoned] = (folder / TEMP_FOLDER / "pages").glob("*.parquet")  # left behind, unread
    assert abandoned.name not in {Path(p).name.removeprefix("part-") for p in paths}


def test_rows_are_written_in_row_groups_with_the_tables_schema(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(write, "RUN_ROW_GROUP_BYTES", 1)  # flush every record batch
    dofn = _WriteBundleFiles(str(tmp_path / TEMP_FOLDER), {"pages": PAGES})
    [path] = _bundle(dofn, _page_rows(2500, "x").to_pylist())

    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 3  # 1000 + 1000 + 500
    assert parquet.schema_arrow.metadata == PAGES.metadata
    assert columns_of(parquet.schema_arrow) == columns_of(PAGES)
    assert parquet.read().column("page_number").to_pylist() == list(range(1, 2501))
