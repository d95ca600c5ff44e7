"""Write one Parquet table with its explicit schema, the way every vlbeam Parquet file is written
(codec, row groups, list form: `schemas/parquet.py`)."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from vlbeam.schemas.parquet import (  # noqa: F401 - re-exported: the sink's settings
    CODEC,
    CODEC_LEVEL,
    RECORD_BATCH_ROWS,
    ROW_GROUP_BYTES,
    RUN_ROW_GROUP_BYTES,
    writer_options,
)


class WriteTable(beam.PTransform):
    """dict rows → `{prefix}/part-*.parquet` (one file per bundle)."""

    def __init__(self, folder: str, schema: pa.Schema) -> None:
        super().__init__()
        self._folder = folder
        self._schema = schema

    def expand(self, rows):
        return rows | "WriteParquet" >> beam.io.WriteToParquet(
            file_path_prefix=f"{self._folder.rstrip('/')}/part",
            schema=self._schema,  # its metadata lands in each file's footer
            codec=CODEC,
            row_group_buffer_size=RUN_ROW_GROUP_BYTES,
            record_batch_size=RECORD_BATCH_ROWS,
            file_name_suffix=".parquet",
            num_shards=0,
            # lists as the Parquet spec's LIST (element named `element`): BigQuery, Spark
            # and DuckDB read them as arrays without casts
            use_compliant_nested_type=True,
        )
