"""Write a run's tables as Parquet files with their explicit schemas, the way every vlbeam
Parquet file is written (codec, row groups, list form: `schemas/parquet.py`).

One transform writes every table (`WriteTableFiles`), with Beam's own file-sink protocol done
once for all of them: each bundle writes one file per table it has rows for into a temporary
folder and outputs their paths; after one small shuffle of those paths (which holds only the
bundles the runner committed), the files are moved into their table folders. A bundle that
failed and was retried leaves only temporary files no path points to, never moved, so a retry
never duplicates rows. Written by hand because Beam's `WriteToParquet` is one such sink per
table: ten of them were 120 of a one-page run's 187 transforms, about a third of its fixed
cost (graph construction and ~40 execution stages in-process), and ten shuffles on Dataflow.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Mapping

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from vlbeam.schemas.parquet import (
    RECORD_BATCH_ROWS,
    RUN_ROW_GROUP_BYTES,
    RowGroups,
    writer_options,
)

TEMP_FOLDER = "_bundles"  # under the staged folder: files of bundles not yet committed


class TableFile:
    """One table's Parquet file of one bundle, on any Beam filesystem: rows are gathered into
    record batches of `RECORD_BATCH_ROWS` and written as row groups of about
    `RUN_ROW_GROUP_BYTES` (what a worker holds before a flush)."""

    def __init__(self, path: str, schema: pa.Schema) -> None:
        self.path = path
        self._schema = schema
        self._handle = FileSystems.create(path)
        self._writer = pq.ParquetWriter(self._handle, schema, **writer_options())
        self._rows: list[dict] = []
        self._groups = RowGroups(schema, RUN_ROW_GROUP_BYTES)

    def add(self, row: dict) -> None:
        self._rows.append(row)
        if len(self._rows) >= RECORD_BATCH_ROWS:
            self._batch()

    def _batch(self) -> None:
        if self._rows:
            batch = pa.RecordBatch.from_pylist(self._rows, schema=self._schema)
            self._rows = []
            self._write(self._groups.add(batch))

    def _write(self, group: pa.Table | None) -> None:
        if group is not None:
            self._writer.write_table(group, row_group_size=group.num_rows)

    def close(self) -> str:
        self._batch()
        self._write(self._groups.rest())
        self._writer.close()
        self._handle.close()
        return self.path

    def abandon(self) -> None:
        """Close without finishing (a failed bundle): the file is never committed."""
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._handle.close()


class _WriteBundleFiles(beam.DoFn):
    """(table, row) → one temporary file per table per bundle; (table, path) for each."""

    def __init__(self, temp: str, schemas: Mapping[str, pa.Schema]) -> None:
        self._temp = temp
        self._schemas = dict(schemas)
        self._files: dict[str, TableFile] = {}

    def start_bundle(self) -> None:
        self._files = {}

    def process(self, element: tuple[str, dict]) -> None:
        table, row = element
        file = self._files.get(table)
        if file is None:
            path = FileSystems.join(self._temp, table, f"{uuid.uuid4().hex}.parquet")
            file = self._files[table] = TableFile(path, self._schemas[table])
        file.add(row)

    def finish_bundle(self) -> Iterable:
        files, self._files = self._files, {}
        for table, file in files.items():
            yield GlobalWindows.windowed_value((table, file.close()))

    def teardown(self) -> None:
        for file in self._files.values():
            file.abandon()
        self._files = {}


def commit_files(element: tuple[str, Iterable[str]], folder: str) -> tuple[str, list[str]]:
    """Move one table's committed bundle files into `folder/<table>/part-<id>.parquet`.
    Idempotent: a file an earlier try of this step already moved is skipped."""
    table, temp_paths = element
    target_dir = FileSystems.join(folder, table)
    if "://" not in folder and not FileSystems.exists(target_dir):
        FileSystems.mkdirs(target_dir)  # object stores have no folders to make
    sources, targets, done = [], [], []
    for source in sorted(temp_paths):
        target = FileSystems.join(target_dir, "part-" + source.rsplit("/", 1)[-1])
        if FileSystems.exists(source):
            sources.append(source)
            targets.append(target)
        elif FileSystems.exists(target):
            done.append(target)
        else:
            raise FileNotFoundError(f"committed bundle file {source} is gone")
    if sources:
        FileSystems.rename(sources, targets)
    return table, sorted(done + targets)


class WriteTableFiles(beam.PTransform):
    """(table, dict row) pairs → `{folder}/<table>/part-*.parquet` (one file per table per
    bundle), each table with its schema from `schemas`. Outputs (table, [paths]) for every
    table that got rows; a table without rows gets no file (the publisher writes it an empty
    one)."""

    def __init__(self, folder: str, schemas: Mapping[str, pa.Schema]) -> None:
        super().__init__()
        self._folder = folder.rstrip("/")
        self._schemas = dict(schemas)

    def expand(self, rows):
        temp = FileSystems.join(self._folder, TEMP_FOLDER)
        return (
            rows
            | "WriteBundleFiles" >> beam.ParDo(_WriteBundleFiles(temp, self._schemas))
            | "GroupByTable" >> beam.GroupByKey()
            | "CommitFiles" >> beam.Map(commit_files, self._folder)
        )
