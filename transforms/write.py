"""Write one Parquet table with its explicit schema."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa


class WriteTable(beam.PTransform):
    """dict rows → `{prefix}/part-*.parquet` (one file per bundle)."""

    def __init__(self, folder: str, schema: pa.Schema) -> None:
        super().__init__()
        self._folder = folder
        self._schema = schema

    def expand(self, rows):
        return rows | "WriteParquet" >> beam.io.WriteToParquet(
            file_path_prefix=f"{self._folder.rstrip('/')}/part",
            schema=self._schema,
            file_name_suffix=".parquet",
            num_shards=0,
            # lists as the Parquet spec's LIST (element named `element`): BigQuery, Spark
            # and DuckDB read them as arrays without casts
            use_compliant_nested_type=True,
        )
