"""Writing a job's tables as vlbeam's Parquet dataset: `WriteTables` stages every table of a
`ProcessResult` under its attempt's own `DIR/_staging/<run_id>/<attempt>/` while the pipeline
runs, and `publish` moves them into their `run=<run_id>` partitions and commits the run once it
has succeeded (`outputs/publish.py`), so readers never see a half-written run, and nothing a
dead attempt of the same run id left is published."""

from __future__ import annotations

from collections.abc import Mapping

import apache_beam as beam
from apache_beam.pvalue import PCollection

from vlbeam.outputs import publish as _publish
from vlbeam.outputs.layout import latest_staged_attempt, new_attempt_id, staging_dir
from vlbeam.transforms.rows import row_type
from vlbeam.transforms.write import WriteTableFiles


class WriteTables(beam.PTransform):
    """A `ProcessResult` (or any {table: PCollection of rows}) → Parquet files staged for
    `run_id` (use the `Process`'s: `process.run_id`) under `output`, in the folder of one
    attempt (`attempt`, default: a new one; `.attempt` says which). Call
    `publish(output, run_id, attempt=write_tables.attempt)` after the pipeline succeeded to
    make them visible. Outputs (table, [staged file paths]) for each table that got rows."""

    def __init__(self, output: str, run_id: str, *, attempt: str | None = None) -> None:
        super().__init__()
        if not run_id:
            raise ValueError("WriteTables needs the run id of the Process it writes")
        self._output = output
        self._run_id = run_id
        self.attempt = attempt or new_attempt_id()

    def expand(self, tables: Mapping[str, PCollection]):
        from vlbeam.schemas import TABLES

        run_id = self._run_id
        unknown = set(tables) - set(TABLES)
        if unknown:
            raise ValueError(f"unknown tables {sorted(unknown)}; tables are {list(TABLES)}")
        if not tables:
            raise ValueError("WriteTables needs at least one table")
        staged = staging_dir(self._output, run_id, self.attempt)
        tagged = [
            rows | f"Tag_{table}" >> beam.Map(_tagged, table, rows.element_type is row_type(table))
            for table, rows in tables.items()
        ]
        return (
            tagged
            | "AllTables" >> beam.Flatten()
            | "Write" >> WriteTableFiles(staged, {t: TABLES[t] for t in tables})
        )


def _tagged(row, table: str, as_row: bool) -> tuple[str, dict]:
    """(table, dict row); a `Process(as_rows=True)` row (a NamedTuple) back to a dict."""
    return table, row._asdict() if as_row else row


def publish(
    output: str,
    run_id: str,
    mode: str = "overwrite",
    *,
    attempt: str | None = None,
    manifest: dict | None = None,
) -> dict[str, list[str]]:
    """Publish every table staged by `WriteTables` for `run_id` and commit the run (an empty
    table is written for one with no rows). `mode`: `overwrite` drops the other runs'
    partitions, `append` keeps them. `attempt`: the `WriteTables.attempt` that staged them
    (default: the run's newest staged attempt; an older one, e.g. a crashed run's, is never
    published). `manifest`: the run manifest the commit record carries. Returns the published
    files per table."""
    from vlbeam.schemas import TABLES

    attempt = attempt or latest_staged_attempt(output, run_id) or new_attempt_id()
    return _publish.publish(output, run_id, TABLES, mode, attempt=attempt, manifest=manifest)
