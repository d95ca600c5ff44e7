"""Warehouse loading: `vlbeam load duckdb DIR DB` creates or replaces one DuckDB table per
output table from every run partition (DuckDB is embedded: no server). Local output folders;
for gs:// or s3:// outputs load them in BigQuery or Spark instead (README)."""

from __future__ import annotations

import glob
import logging
import os

from vlbeam.outputs.layout import table_glob
from vlbeam.schemas import TABLES

logger = logging.getLogger(__name__)


def load_duckdb(output: str, database: str) -> dict[str, int]:
    """(Re)create each table in `database` from `output`; returns the row count per table."""
    import duckdb

    if "://" in output:
        raise ValueError("vlbeam load duckdb reads a local output folder")
    counts: dict[str, int] = {}
    with duckdb.connect(database) as con:
        for table, schema in TABLES.items():
            pattern = table_glob(output, table)
            if glob.glob(pattern):
                con.execute(
                    f"CREATE OR REPLACE TABLE {table} AS SELECT * EXCLUDE (run) FROM "
                    "read_parquet(?, hive_partitioning = true, union_by_name = true, "
                    "hive_types = {'run': VARCHAR})",
                    [pattern],
                )
            else:  # no run wrote this table yet: an empty table with the right types
                empty = schema.empty_table()  # noqa: F841 - read by DuckDB's replacement scan
                con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM empty")
            counts[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    logger.info("loaded %s into %s: %s", output, os.path.abspath(database), counts)
    return counts
