"""Warehouse loading: `vlbeam load duckdb DIR DB` creates or replaces one DuckDB table per
output table from the committed runs' files (`committed_view`: never a file of a run that
died or is still publishing, never a run an overwrite replaced). DuckDB is embedded: no
server. Local output folders; for gs:// or s3:// outputs load them in BigQuery or Spark
instead (README)."""

from __future__ import annotations

import logging
import os

from vlbeam.outputs.layout import committed_view
from vlbeam.schemas import TABLES

logger = logging.getLogger(__name__)


def load_duckdb(output: str, database: str) -> dict[str, int]:
    """(Re)create each table in `database` from `output`; returns the row count per table."""
    import duckdb

    if "://" in output:
        raise ValueError("vlbeam load duckdb reads a local output folder")
    counts: dict[str, int] = {}
    view = committed_view(output, TABLES)
    with duckdb.connect(database) as con:
        for table, schema in TABLES.items():
            committed = view.files(table)
            if committed:
                con.execute(
                    f"CREATE OR REPLACE TABLE {table} AS SELECT * EXCLUDE (run) FROM "
                    "read_parquet(?, hive_partitioning = true, union_by_name = true, "
                    "hive_types = {'run': VARCHAR})",
                    [committed],
                )
            else:  # no run wrote this table yet: an empty table with the right types
                empty = schema.empty_table()  # noqa: F841 - read by DuckDB's replacement scan
                con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM empty")
            counts[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    logger.info("loaded %s into %s: %s", output, os.path.abspath(database), counts)
    return counts
