"""Reading a run for the report: its partition of every table (light columns only) and its
manifest; the heavy text columns of chosen documents later, on demand."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from vlbeam.outputs.layout import choose_run, committed_view, list_runs, open_parquet
from vlbeam.schemas import TABLES

# columns read up front; the rest (answers, text layers) only for the pages shown
HEAVY = {
    "pages": {"text", "text_layer", "reasoning"},
    "video_windows": {"raw_output", "reasoning", "frame_times_s"},
    "blocks": {"text", "html"},
    "tables": {"html", "rows"},
    "figures": {"image"},
    "document_text": {"text", "page_spans", "removed"},
    "extractions": {"json", "reasoning"},
}


@dataclass
class RunData:
    """One run's tables (light columns) and manifest."""

    output: str
    run_id: str
    manifest: dict | None
    tables: dict[str, pa.Table]
    files: dict[str, list[str]]  # table -> its Parquet files, to read heavy columns later


def _read_table(files: list[str], schema: pa.Schema, skip: set[str]) -> pa.Table:
    parts = []
    for path in files:
        handle = open_parquet(path)
        names = [n for n in handle.schema_arrow.names if n not in skip]
        parts.append(handle.read(columns=names))
    if not parts:
        return pa.schema([f for f in schema if f.name not in skip]).empty_table()
    return pa.concat_tables(parts, promote_options="permissive")


def load_run(output: str, run_id: str | None = None) -> RunData:
    output = output.rstrip("/") if len(output) > 1 else output
    runs, published = list_runs(output, TABLES)
    run_id = choose_run(runs, published, run_id)
    view = committed_view(output, TABLES)  # a run's committed files only
    tables, files = {}, {}
    for table, schema in TABLES.items():
        files[table] = view.partition_files(table, run_id)
        tables[table] = _read_table(files[table], schema, HEAVY.get(table, set()))
    return RunData(output, run_id, runs[run_id], tables, files)


def read_rows(run: RunData, table: str, doc_ids: set[str]) -> list[dict]:
    """All columns of a table's rows for these documents (streamed in batches)."""
    rows: list[dict] = []
    if not doc_ids:
        return rows
    wanted = pa.array(sorted(doc_ids), pa.string())
    for path in run.files.get(table, []):
        for batch in open_parquet(path).iter_batches(batch_size=2048):
            mask = pc.is_in(batch.column("doc_id"), value_set=wanted)
            rows += batch.filter(mask).to_pylist()
    return rows
