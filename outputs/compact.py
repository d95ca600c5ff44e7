"""`vlbeam compact DIR`: rewrite each table's many small run files into a few large ones,
without changing a row, so a nightly `--output-mode append` / `--skip-existing` output does not
pile up one small file per table per run.

    DIR/pages/<night1 partition>/part-0.parquet    DIR/pages/<compacted-20261201T050000Z-1a2b3c>/
    DIR/pages/<night2 partition>/part-0.parquet  →     part-00000.parquet
    DIR/pages/<night3 partition>/part-0.parquet

(partition folders and the records' places: `outputs/layout.py`)

- Rows: every row of every small file, in partition then file order, conformed to the current
  schema (older files gain null columns they lack; a column the schema lacks stops the
  compaction rather than drop it), and checked equal to the input after writing. `run_id` is a
  column of every table, so each row still says which run wrote it; the `run` partition of a
  compacted row is `compacted-<id>` (the compaction, see its record).
- Files at least half the target size are already big: they stay as they are.
- Readers never see a half-done state: the new table is assembled beside the old one
  (`DIR/_compact/<id>/<table>`, compacted files plus hard links of everything kept) and the two
  folders are exchanged in one atomic `renameat2(RENAME_EXCHANGE)`; a reader sees the old files
  or the new ones, never both and never neither (where the kernel or filesystem lacks the
  exchange, two renames leave the table absent for microseconds: never a wrong row). Since
  rows don't change, tables swapped one after another are consistent at every moment.
- A failure before a table's exchange leaves that table's files as they were; the work folder
  is removed. One compaction at a time (`DIR/_compact.lock`), and none while a run publishes:
  compaction holds the output's publish lease (outputs/lease.py) throughout, first removes
  what no commit lists (a dead publisher's files, superseded partitions: they are in no
  reader's view and must not be merged into it), and writes its record, which commits the
  `compacted-<id>` partition for vlbeam's readers (`committed_view`), before the first exchange.
- Local (or mounted) output folders only: object stores have no atomic exchange.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlbeam.outputs.layout import (
    COMPACT_LOCK,
    COMPACT_WORK,
    local_compaction_record,
    local_table_files,
    partition_name,
)
from vlbeam.outputs.lease import LeaseBusy, PublishLease
from vlbeam.outputs.publish import drop_uncommitted
from vlbeam.outputs.store import write_whole
from vlbeam.schemas import TABLES
from vlbeam.schemas.ids import new_run_id
from vlbeam.schemas.parquet import ROW_GROUP_BYTES, RowGroups, writer_options
from vlbeam.schemas.run_ids import check_run_id

logger = logging.getLogger(__name__)

TARGET_FILE_BYTES = 256 * 1024 * 1024  # on disk; files of half this or more are kept
COMPACT_LEVEL = 3  # zstd: written once, read many times (bench/bench_parquet.py: -25 % size)


class CompactionError(RuntimeError):
    pass


@dataclass
class TableResult:
    table: str
    files_before: int = 0
    files_after: int = 0
    files_kept: int = 0
    rows: int = 0
    partition: str | None = None  # the compacted partition's folder name, if any
    swapped: bool = False
    merged: list[str] = field(default_factory=list)  # files rewritten (relative paths)


# ----------------------------------------------------------------------------- rows


def conform(batch: pa.RecordBatch, schema: pa.Schema, source: str) -> pa.RecordBatch:
    """`batch` in `schema`'s column order and types: columns it lacks become nulls when the
    schema allows; a column the schema lacks, or a null where none is allowed, raises."""
    extra = set(batch.schema.names) - set(schema.names)
    if extra:
        raise CompactionError(
            f"{source} has columns the current schema lacks ({', '.join(sorted(extra))}); "
            "compacting would drop them"
        )
    arrays = []
    for target in schema:
        if target.name in batch.schema.names:
            column = batch.column(target.name)
            try:
                column = column.cast(target.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise CompactionError(
                    f"{source}: column {target.name} ({column.type}) can't become "
                    f"{target.type}: {exc}"
                ) from None
        elif target.nullable:
            column = pa.nulls(batch.num_rows, target.type)
        else:
            raise CompactionError(f"{source} lacks the required column {target.name}")
        if not target.nullable and column.null_count:
            raise CompactionError(f"{source}: required column {target.name} holds nulls")
        strict_list = pa.types.is_list(target.type) and not target.type.value_field.nullable
        if strict_list and pc.list_flatten(column).null_count:
            raise CompactionError(f"{source}: list column {target.name} holds null elements")
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_rows(files: list[Path], schema: pa.Schema, root: Path) -> Iterator[pa.RecordBatch]:
    for path in files:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=8192):
            yield conform(batch, schema, str(path.relative_to(root)))


def same_rows(left: Iterator[pa.RecordBatch], right: Iterator[pa.RecordBatch]) -> bool:
    """Whether two batch streams hold the same rows in the same order (batching aside)."""
    a = b = None
    while True:
        while a is None or len(a) == 0:
            a = next(left, None)
            if a is None:
                break
        while b is None or len(b) == 0:
            b = next(right, None)
            if b is None:
                break
        if a is None or b is None:
            return a is None and b is None
        n = min(len(a), len(b))
        if not a.slice(0, n).equals(b.slice(0, n)):
            return False
        a, b = a.slice(n), b.slice(n)


def write_rows(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    folder: Path,
    *,
    target_file_bytes: int,
    row_group_bytes: int,
) -> tuple[list[Path], int]:
    """Write `batches` as `folder/part-NNNNN.parquet`, row groups of about `row_group_bytes`
    (Arrow size), a new file once one reaches `target_file_bytes` on disk. Always at least one
    file (an empty one with the schema when there are no rows)."""
    folder.mkdir(parents=True)
    options = {**writer_options(), "compression_level": COMPACT_LEVEL}
    files: list[Path] = []
    writer: pq.ParquetWriter | None = None
    rows = 0

    def new_writer() -> pq.ParquetWriter:
        files.append(folder / f"part-{len(files):05d}.parquet")
        return pq.ParquetWriter(files[-1], schema, **options)

    def flush(table: pa.Table) -> None:
        nonlocal writer
        if writer is None:
            writer = new_writer()
        writer.write_table(table, row_group_size=max(1, table.num_rows))
        if files[-1].stat().st_size >= target_file_bytes:
            writer.close()
            writer = None

    groups = RowGroups(schema, row_group_bytes)
    try:
        for batch in batches:
            rows += batch.num_rows
            group = groups.add(batch)
            if group is not None:
                flush(group)
        rest = groups.rest()
        if rest is not None or not files:
            flush(rest if rest is not None else schema.empty_table())
    finally:
        if writer is not None:
            writer.close()
    return files, rows


# ----------------------------------------------------------------------------- folders


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE). False where the kernel,
    C library or filesystem can't; OSError on any other failure."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_folders(live: Path, new: Path) -> None:
    """Make `new` the folder at `live`; the old `live` ends up at `new`."""
    if _exchange(live, new):
        return
    parked = new.with_name(new.name + ".old")
    os.rename(live, parked)
    try:
        os.rename(new, live)
    except BaseException:
        os.rename(parked, live)
        raise
    os.rename(parked, new)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def _lock(out: Path):
    path = out / COMPACT_LOCK
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise CompactionError(
            f"another compaction holds {path} (remove it if no compaction is running)"
        ) from None
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        yield
    finally:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- compaction


def compact_table(
    out: Path,
    table: str,
    work: Path,
    partition: str,
    *,
    target_file_bytes: int = TARGET_FILE_BYTES,
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> TableResult:
    """Compact one table (see the module docstring). The swap is the last step."""
    schema = TABLES[table]
    live = out / table
    result = TableResult(table)
    if not live.is_dir():
        return result
    everything = _files(live)
    parquet = local_table_files(live)
    result.files_before = len(parquet)
    small = [p for p in parquet if p.stat().st_size < target_file_bytes // 2]
    if len(small) < 2:
        result.files_after = result.files_kept = len(parquet)
        return result
    new = work / table
    folder = new / partition_name(partition)
    written, rows = write_rows(
        read_rows(small, schema, live),
        schema,
        folder,
        target_file_bytes=target_file_bytes,
        row_group_bytes=row_group_bytes,
    )
    if not same_rows(read_rows(small, schema, live), read_rows(written, schema, new)):
        raise CompactionError(f"{table}: the compacted files don't read back as the input rows")
    merged = set(small)
    kept = [p for p in everything if p not in merged]
    for path in kept:  # big files, and anything that isn't a table file, stay as they are
        _link_or_copy(path, new / path.relative_to(live))
    swap_folders(live, new)  # `new` now holds the old table
    result.swapped = True
    # a run that published during the compaction put files in the old folder: carry them over
    before = {p.relative_to(live) for p in everything}
    for path in _files(new):
        rel = path.relative_to(new)
        if rel not in before and not (live / rel).exists():
            logger.warning("moving %s, published during the compaction", rel)
            (live / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, live / rel)
    shutil.rmtree(new)
    result.rows = rows
    result.partition = folder.name
    result.files_kept = sum(1 for p in kept if p in parquet)
    result.files_after = len(written) + result.files_kept
    result.merged = [str(p.relative_to(live)) for p in small]
    return result


def compact(
    output: str,
    tables: list[str] | None = None,
    *,
    target_file_bytes: int = TARGET_FILE_BYTES,
    row_group_bytes: int = ROW_GROUP_BYTES,
    compaction_id: str | None = None,
) -> dict[str, TableResult]:
    """Compact `tables` (default: all) of the output folder `output`; returns what happened
    per table and records it in `output/_compactions/<id>.json`."""
    if "://" in output:
        raise CompactionError(
            "vlbeam compact works on local or mounted output folders: an object store has no "
            "atomic folder swap, so readers would see rows twice or not at all meanwhile"
        )
    out = Path(output).resolve()
    if not out.is_dir():
        raise CompactionError(f"no output folder at {out}")
    unknown = set(tables or []) - set(TABLES)
    if unknown:
        raise CompactionError(f"unknown tables {sorted(unknown)}; tables are {list(TABLES)}")
    cid = check_run_id(compaction_id or new_run_id())
    partition = f"compacted-{cid}"
    started = datetime.now(UTC)
    results: dict[str, TableResult] = {}
    lease = PublishLease(str(out), f"compaction-{cid}", wait_s=LEASE_WAIT_S)
    record_path = local_compaction_record(out, cid)
    with _lock(out), _leased(lease):
        drop_uncommitted(str(out), TABLES)
        record = {"compaction_id": cid, "seq": lease.generation,
                  "started_at": started.isoformat(), "tables": {}}  # fmt: skip
        had_records = record_path.parent.is_dir()
        record_path.parent.mkdir(exist_ok=True)
        write_whole(str(record_path), json.dumps(record, indent=2).encode())  # commits the swaps
        work = out / COMPACT_WORK / cid
        work.mkdir(parents=True)
        try:
            for table in tables or list(TABLES):
                results[table] = compact_table(
                    out,
                    table,
                    work,
                    partition,
                    target_file_bytes=target_file_bytes,
                    row_group_bytes=row_group_bytes,
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                (out / COMPACT_WORK).rmdir()  # only if empty
            if any(r.swapped for r in results.values()):
                record["finished_at"] = datetime.now(UTC).isoformat()
                record["tables"] = {t: asdict(r) for t, r in results.items()}
                write_whole(str(record_path), json.dumps(record, indent=2).encode())
            else:
                record_path.unlink()
                if not had_records:
                    record_path.parent.rmdir()
    return results


LEASE_WAIT_S = 60.0  # a publish takes seconds; longer means a run is stuck publishing


@contextlib.contextmanager
def _leased(lease: PublishLease):
    try:
        lease.acquire()
    except LeaseBusy as exc:
        raise CompactionError(f"a run is publishing into the output: {exc}") from None
    try:
        yield lease
    finally:
        lease.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vlbeam compact",
        description="Rewrite the small run files of an output folder's tables into a few "
        "large ones, without changing a row (readers see the old files or the new ones).",
    )
    parser.add_argument("output", help="local output folder (the --output of vlbeam run)")
    parser.add_argument(
        "--table", action="append", choices=list(TABLES), help="only this table (repeatable)"
    )
    parser.add_argument(
        "--target-file-mb",
        type=float,
        default=TARGET_FILE_BYTES / 2**20,
        help="size of the files written; files of half this size or more are kept as they are",
    )
    args = parser.parse_args(argv)
    try:
        results = compact(
            args.output, args.table, target_file_bytes=int(args.target_file_mb * 2**20)
        )
    except CompactionError as exc:
        print(f"vlbeam compact: {exc}", file=sys.stderr)
        return 2
    for table, r in results.items():
        if r.swapped:
            print(f"{table}: {r.files_before} files -> {r.files_after} ({r.rows} rows rewritten "
                  f"into {r.partition}, {r.files_kept} kept)")  # fmt: skip
        else:
            print(f"{table}: {r.files_before} files, nothing to compact")
    return 0
