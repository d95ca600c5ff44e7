"""Write one Parquet table with its explicit schema, the way every vlbeam Parquet file is written.

- Compression: zstd at pyarrow's default level (1), on every column chunk. On a 10,000-row
  `pages` table of real-text pages it was 2.1x smaller than uncompressed and 1.4x smaller than
  snappy, at snappy's write cost and faster pyarrow reads (`bench/bench_parquet.py`, README).
- Row groups: a run writes groups of up to 4 MiB of Arrow data (Beam's buffer, held in the
  worker's memory until flushed: a 5,000-page job's worker grew by ~55 MiB with 64 MiB or
  16 MiB, by ~3 MiB with 4 MiB, `bench/bench_inference_flow.py`); `vlbeam compact` rewrites
  runs into 64 MiB groups, large enough for engines to skip by statistics without per-group
  overhead.
- Lists in the Parquet spec's 3-level form (element named `element`), required elements.
- The schema's metadata (`vlbeam.schema_version`, `vlbeam.table`) in each file's footer.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

CODEC = "zstd"
CODEC_LEVEL = 1  # pyarrow's default for zstd; Beam's sink can't pass another level
ROW_GROUP_BYTES = 64 * 1024 * 1024  # compacted files
RUN_ROW_GROUP_BYTES = 4 * 1024 * 1024  # what a run's workers buffer before a flush
RECORD_BATCH_ROWS = 1000


def writer_options() -> dict:
    """`pyarrow.parquet.ParquetWriter` keyword arguments for every file vlbeam writes itself
    (empty tables, compaction), matching what `WriteTable` gets from Beam."""
    return {
        "compression": CODEC,
        "compression_level": CODEC_LEVEL,
        "use_compliant_nested_type": True,
    }


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
