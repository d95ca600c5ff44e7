"""`vlbeam compact`: many small run files become a few large ones, not a row changed; readers
see the old files or the new ones; a failure leaves the previous files in place."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.pipeline_helpers import columns_of
from vlbeam.outputs import compact as compact_module
from vlbeam.outputs.compact import CompactionError, _exchange, compact
from vlbeam.outputs.layout import COMPACT_LOCK as LOCK
from vlbeam.outputs.layout import COMPACT_WORK as WORK
from vlbeam.outputs.layout import COMPACTIONS, LEASE, RUNS, STAGING
from vlbeam.outputs.lease import PublishLease
from vlbeam.pipeline.cli import main
from vlbeam.schemas import DOCUMENTS, PAGES, SCHEMA_VERSION, TABLES, VERSION_KEY, VIDEO_EVENTS
from vlbeam.schemas.parquet import writer_options


def page_rows(run: str, n: int, start: int = 0) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "doc_id": hashlib.sha256(f"{run}-{i // 3}".encode()).hexdigest(),
                "source_uri": f"/in/{run}/doc{i // 3}.pdf",
                "page_number": i % 3 + 1,
                "width_px": 900 + i,
                "height_px": 1288,
                "text": f"# {run} page {i}\n\n" + "lorem ipsum dolor " * (i % 7),
                "text_layer": None if i % 2 else f"layer {i}",
                "text_source": "model",
                "quality_flags": ["length"] if i % 5 == 0 else [],
                "text_layer_agreement": None,
                "retries": 0,
                "model": "m",
                "backend": "transformers",
                "prompt_id": "p1",
                "input_tokens": 100 + i,
                "output_tokens": i,
                "finish_reason": "stop",
                "latency_s": 0.5 + i / 100,
                "provider": None,
                "served_model": None,
                "request_id": None,
                "reasoning": None,
                "cost_usd": None,
                "run_id": run,
            }
            for i in range(start, start + n)
        ],
        schema=PAGES,
    )


def doc_rows(run: str, n: int) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"doc_id": hashlib.sha256(f"{run}-{i}".encode()).hexdigest(),
             "source_uri": f"/in/{run}/doc{i}.pdf", "kind": "pdf", "size_bytes": 1000 + i,
             "status": "ok", "num_pages": 3, "duration_s": None, "num_failures": 0,
             "model": "m", "backend": "transformers", "prompt_id": "p1", "run_id": run}
            for i in range(n)
        ],
        schema=DOCUMENTS,
    )  # fmt: skip


def event_rows(run: str, n: int) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"doc_id": "e" * 64, "source_uri": "/in/v.mp4", "query": None, "start_s": float(i),
             "end_s": i + 1.5, "description": f"event {i}", "window_indexes": [i, i + 1],
             "model": "m", "prompt_id": "g1", "run_id": run}
            for i in range(n)
        ],
        schema=VIDEO_EVENTS,
    )  # fmt: skip


def write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **writer_options())
    return path


def nightly_output(out: Path, runs: int = 4) -> Path:
    """What `runs` nightly append runs leave: per run one small file per table (pages: two,
    as a run with two bundles writes)."""
    for r in range(runs):
        run = f"night{r + 1}"
        write(out / "pages" / f"run={run}" / "part-00000-of-00002.parquet", page_rows(run, 5))
        write(out / "pages" / f"run={run}" / "part-00001-of-00002.parquet",
              page_rows(run, 4, start=5))  # fmt: skip
        write(out / "documents" / f"run={run}" / "part-00000-of-00001.parquet", doc_rows(run, 3))
        write(out / "video_events" / f"run={run}" / "part-00000-of-00001.parquet",
              event_rows(run, 2))  # fmt: skip
        empty = (
            "video_windows",
            "failures",
            "blocks",
            "tables",
            "figures",
            "document_text",
            "extractions",
        )
        for table in empty:  # what an empty table gets
            write(out / table / f"run={run}" / "part-empty.parquet", TABLES[table].empty_table())
        (out / RUNS).mkdir(exist_ok=True)
        (out / RUNS / f"{run}.json").write_text(json.dumps({"status": "succeeded"}))
    return out


def rows(out: Path, table: str) -> list[dict]:
    """The table's rows as a reader sees them, without the partition column, in a stable order."""
    data = ds.dataset(out / table, format="parquet", partitioning="hive").to_table()
    found = data.drop_columns(["run"]).to_pylist()
    return sorted(found, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def snapshot(out: Path) -> dict[str, str]:
    """Every file's hash, less the publish lease's generations (compaction takes the lease)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] != LEASE}  # fmt: skip


def parquet_files(out: Path, table: str) -> list[Path]:
    return sorted((out / table).rglob("*.parquet"))


def test_compaction_merges_small_runs_without_changing_a_row(tmp_path: Path) -> None:
    out = nightly_output(tmp_path / "out")
    before = {t: rows(out, t) for t in TABLES}
    assert len(parquet_files(out, "pages")) == 8 and before["pages"]

    results = compact(str(out), compaction_id="c1")

    for table in TABLES:
        assert rows(out, table) == before[table], table
        [folder] = (out / table).iterdir()
        assert folder.name == "run=compacted-c1"
        assert len(parquet_files(out, table)) == 1
        assert results[table].swapped and results[table].files_after == 1
    assert results["pages"].files_before == 8 and results["pages"].rows == 36
    # in the same order as the runs, each row still says which run wrote it
    pages = pq.read_table(parquet_files(out, "pages")[0])
    assert pages.column("run_id").to_pylist() == [
        f"night{r}" for r in range(1, 5) for _ in range(9)
    ]
    assert pages.schema.field("text").type == pa.string()
    meta = pq.ParquetFile(parquet_files(out, "video_events")[0]).metadata
    assert meta.metadata[VERSION_KEY.encode()] == SCHEMA_VERSION.encode()
    assert all(meta.row_group(0).column(c).compression == "ZSTD" for c in range(meta.num_columns))
    # nothing left behind, the compaction recorded, the run manifests untouched
    assert not (out / WORK).exists() and not (out / LOCK).exists()
    record = json.loads((out / COMPACTIONS / "c1.json").read_text())
    assert record["tables"]["pages"]["merged"][0] == "run=night1/part-00000-of-00002.parquet"
    assert sorted(p.name for p in (out / RUNS).iterdir()) == [f"night{r}.json" for r in range(1, 5)]


def test_engines_read_the_compacted_table_like_the_original(tmp_path: Path) -> None:
    out = nightly_output(tmp_path / "out")
    compact(str(out), compaction_id="c2")
    with duckdb.connect() as con:
        scan = f"read_parquet('{out}/pages/run=*/*.parquet', hive_partitioning = true)"
        counts = con.execute(
            f"SELECT run, count(*), count(DISTINCT run_id) FROM {scan} GROUP BY run"
        ).fetchall()
        types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    assert counts == [("compacted-c2", 36, 4)]
    assert types["run"] == "VARCHAR" and types["page_number"] == "INTEGER"
    events = ds.dataset(out / "video_events", partitioning="hive").schema
    assert events.field("window_indexes").type.value_field.nullable is False


def test_big_files_are_kept_and_only_small_ones_merged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for r in range(8):
        write(out / "pages" / f"run=r{r}" / "part-0.parquet", page_rows(f"r{r}", 40, start=100 * r))
    before = rows(out, "pages")
    target = 2 * max(p.stat().st_size for p in parquet_files(out, "pages")) + 2  # all small
    compact(str(out), ["pages"], target_file_bytes=target, row_group_bytes=4096,
            compaction_id="c3")  # fmt: skip
    first = parquet_files(out, "pages")
    assert len(first) >= 2 and rows(out, "pages") == before
    assert all(p.stat().st_size >= target for p in first[:-1])  # a file rolls at the target
    assert pq.ParquetFile(first[0]).metadata.num_row_groups >= 2  # row groups of ~4 KiB
    inodes = {p.name: p.stat().st_ino for p in first}

    write(out / "pages" / "run=r9" / "part-0.parquet", page_rows("r9", 3, start=900))
    write(out / "pages" / "run=r10" / "part-0.parquet", page_rows("r10", 3, start=1000))
    big = [p for p in first if p.stat().st_size >= target // 2]
    result = compact(str(out), ["pages"], target_file_bytes=target, compaction_id="c4")
    assert result["pages"].files_kept == len(big) >= 1
    kept = [p for p in parquet_files(out, "pages") if p.parent.name == "run=compacted-c3"]
    assert {p.name: p.stat().st_ino for p in kept} == {p.name: inodes[p.name] for p in big}
    assert len(rows(out, "pages")) == len(before) + 6


def test_nothing_to_do_leaves_everything_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out / "pages" / "run=r1" / "part-0.parquet", page_rows("r1", 3))
    before = snapshot(out)
    result = compact(str(out))
    assert not result["pages"].swapped and result["pages"].files_before == 1
    assert snapshot(out) == before


def test_older_files_are_conformed_and_unknown_columns_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # version 1: nullable list elements, and no model-call columns beyond the tokens
    old_events = pa.schema([f if f.name != "window_indexes" else
                            pa.field("window_indexes", pa.list_(pa.int32()), nullable=False)
                            for f in VIDEO_EVENTS])  # fmt: skip
    write(out / "video_events" / "run=old" / "part-0.parquet",
          event_rows("old", 2).cast(old_events))  # fmt: skip
    write(out / "video_events" / "run=new" / "part-0.parquet", event_rows("new", 2))
    old_pages = page_rows("old", 2).drop_columns(["provider", "served_model", "cost_usd"])
    write(out / "pages" / "run=old" / "part-0.parquet", old_pages)
    write(out / "pages" / "run=new" / "part-0.parquet", page_rows("new", 2, start=2))
    compact(str(out), ["video_events", "pages"], compaction_id="c5")
    events = pq.read_table(parquet_files(out, "video_events")[0])
    assert events.schema.field("window_indexes").type == VIDEO_EVENTS.field("window_indexes").type
    assert events.column("window_indexes").to_pylist() == [[0, 1], [1, 2], [0, 1], [1, 2]]
    pages = pq.read_table(parquet_files(out, "pages")[0])
    assert columns_of(pages.schema) == columns_of(PAGES)
    assert pages.column("provider").null_count == 4

    write(out / "pages" / "run=odd" / "part-0.parquet",
          page_rows("odd", 1).append_column("extra", pa.array(["x"])))  # fmt: skip
    write(out / "pages" / "run=odd2" / "part-0.parquet", page_rows("odd2", 1))
    before = snapshot(out)
    with pytest.raises(CompactionError, match="columns the current schema lacks"):
        compact(str(out), ["pages"], compaction_id="c6")
    assert snapshot(out) == before


def test_a_failure_before_the_swap_leaves_the_previous_files(tmp_path: Path, monkeypatch) -> None:
    out = nightly_output(tmp_path / "out")
    before = snapshot(out)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(compact_module, "write_rows", broken)
    with pytest.raises(OSError, match="disk full"):
        compact(str(out), compaction_id="c7")
    assert snapshot(out) == before  # byte for byte, and no work folder, lock or record left

    monkeypatch.undo()
    monkeypatch.setattr(compact_module, "same_rows", lambda a, b: False)
    with pytest.raises(CompactionError, match="don't read back as the input rows"):
        compact(str(out), compaction_id="c8")
    assert snapshot(out) == before


def test_a_failure_between_tables_leaves_each_table_whole(tmp_path: Path, monkeypatch) -> None:
    out = nightly_output(tmp_path / "out")
    before = {t: rows(out, t) for t in TABLES}
    real = compact_module.swap_folders
    calls = []

    def swap_then_fail(live, new):
        calls.append(live.name)
        if len(calls) == 2:
            raise OSError("power cut")
        real(live, new)

    monkeypatch.setattr(compact_module, "swap_folders", swap_then_fail)
    with pytest.raises(OSError, match="power cut"):
        compact(str(out), compaction_id="c9")
    assert [p.name for p in (out / calls[0]).iterdir()] == ["run=compacted-c9"]
    assert len(list((out / calls[1]).iterdir())) == 4  # untouched
    for table in TABLES:
        assert rows(out, table) == before[table], table
    assert not (out / WORK).exists() and not (out / LOCK).exists()
    record = json.loads((out / COMPACTIONS / "c9.json").read_text())
    assert list(record["tables"]) == [calls[0]]


def visible(out: Path, table: str) -> list[dict] | None:
    """What a reader that lists the table now sees (None: no table folder at all)."""
    try:
        return rows(out, table)
    except (FileNotFoundError, pa.ArrowInvalid):
        return None


@pytest.mark.parametrize("atomic", [True, False], ids=["exchange", "two-renames"])
def test_readers_see_the_old_rows_or_the_new_never_both(
    tmp_path: Path, monkeypatch, atomic: bool
) -> None:
    """A reader looks at every table after each filesystem step of the swap (every rename,
    and the exchange itself): with the atomic exchange it sees exactly the old rows or
    exactly the new ones at every step; with the two-rename fallback (no renameat2 here)
    never both, though the table may be missing for a moment between the renames."""
    out = nightly_output(tmp_path / "out")
    before = {t: rows(out, t) for t in TABLES}
    seen: list[tuple[str, str, list[dict] | None]] = []

    def look(step: str) -> None:
        seen.extend((step, t, visible(out, t)) for t in TABLES)

    real_rename, real_exchange = os.rename, compact_module._exchange

    def watched_rename(src, dst, *args, **kwargs):
        real_rename(src, dst, *args, **kwargs)
        look(f"rename {Path(src).name} -> {Path(dst).name}")

    def watched_exchange(a, b):
        done = real_exchange(a, b) if atomic else False
        look(f"exchange {Path(a).name} <-> {Path(b).name}")
        return done

    monkeypatch.setattr(os, "rename", watched_rename)
    monkeypatch.setattr(compact_module, "_exchange", watched_exchange)
    compact(str(out), compaction_id="c10")
    after = {t: rows(out, t) for t in TABLES}
    assert after == before  # compaction changes no row (so "old" and "new" are the same rows)
    assert any(step.startswith("exchange") for step, _, _ in seen), "no swap observed"
    for step, table, got in seen:
        if atomic:
            assert got == before[table], (step, table)  # never missing, never doubled
        else:
            assert got in (before[table], None), (step, table)  # never both
    if atomic:  # each live table folder was exchanged in one step, never renamed away
        renamed = {s for s, _, _ in seen if s.startswith("rename ") and s.split()[1] in TABLES}
        assert renamed == set(), renamed
    for table in TABLES:
        assert [p.name for p in (out / table).iterdir()] == ["run=compacted-c10"]


def test_the_exchange_is_atomic_here(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y").write_text("b")
    assert _exchange(tmp_path / "a", tmp_path / "b") is True  # Linux renameat2, this filesystem
    assert (tmp_path / "a" / "y").exists() and (tmp_path / "b" / "x").exists()


def test_files_published_during_the_compaction_are_kept(tmp_path: Path, monkeypatch) -> None:
    out = nightly_output(tmp_path / "out", runs=2)
    real = compact_module.swap_folders

    def publish_first(live, new):
        if live.name == "pages":  # a run's publish lands between assembling and swapping
            write(live / "run=late" / "part-0.parquet", page_rows("late", 2, start=50))
        real(live, new)

    monkeypatch.setattr(compact_module, "swap_folders", publish_first)
    compact(str(out), ["pages"], compaction_id="c11")
    assert sorted(p.name for p in (out / "pages").iterdir()) == ["run=compacted-c11", "run=late"]
    assert len(rows(out, "pages")) == 2 * 9 + 2


def test_refusals(tmp_path: Path) -> None:
    out = nightly_output(tmp_path / "out", runs=2)
    with pytest.raises(CompactionError, match="object store"):
        compact("gs://bucket/vlbeam")
    with pytest.raises(CompactionError, match="unknown tables"):
        compact(str(out), ["pagez"])
    (out / LOCK).write_text("123\n")
    with pytest.raises(CompactionError, match="another compaction"):
        compact(str(out))
    (out / LOCK).unlink()
    publishing = PublishLease(str(out), "try-20261201T000000Z-00000001", "running1").__enter__()
    compact_module.LEASE_WAIT_S, wait = 0.2, compact_module.LEASE_WAIT_S
    try:
        with pytest.raises(CompactionError, match="running1"):  # a run is publishing
            compact(str(out))
    finally:
        compact_module.LEASE_WAIT_S = wait
    publishing.release()
    (out / STAGING / "running1" / "try-20261201T000000Z-00000001").mkdir(parents=True)
    assert compact(str(out), ["pages"])["pages"].swapped  # a run that only stages doesn't block
    assert (out / STAGING / "running1").exists()


def test_cli(tmp_path: Path, capsys) -> None:
    out = nightly_output(tmp_path / "out", runs=3)
    assert main(["compact", str(out), "--table", "pages"]) == 0
    printed = capsys.readouterr().out
    assert "pages: 6 files -> 1 (27 rows rewritten into run=compacted-" in printed
    assert main(["compact", str(out), "--table", "pages"]) == 0
    assert "pages: 1 files, nothing to compact" in capsys.readouterr().out
    assert main(["compact", "gs://b/x"]) == 2
    assert "object store" in capsys.readouterr().err
