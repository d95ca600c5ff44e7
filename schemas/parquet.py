"""How every vlbeam Parquet file is written (the file format is part of the data contract).

- Compression: zstd at pyarrow's default level (1), on every column chunk. On a 10,000-row
  `pages` table of real-text pages it was 2.1x smaller than uncompressed and 1.4x smaller than
  snappy, at snappy's write cost and faster pyarrow reads (`bench/bench_parquet.py`, README).
- Row groups: a run writes groups of up to 4 MiB of Arrow data (the sink's buffer, held in the
  worker's memory until flushed: a 5,000-page job's worker grew by ~55 MiB with 64 MiB or
  16 MiB, by ~3 MiB with 4 MiB, `bench/bench_inference_flow.py`); `vlbeam compact` rewrites
  runs into 64 MiB groups, large enough for engines to skip by statistics without per-group
  overhead.
- Lists in the Parquet spec's 3-level form (element named `element`), required elements.
- The schema's metadata (`vlbeam.schema_version`, `vlbeam.table`) in each file's footer.

The run's sink (`transforms/write.py`) and the files vlbeam writes after a run (`outputs/`)
all read these settings from here.
"""

from __future__ import annotations

import pyarrow as pa

CODEC = "zstd"
CODEC_LEVEL = 1  # pyarrow's default for zstd
ROW_GROUP_BYTES = 64 * 1024 * 1024  # compacted files
RUN_ROW_GROUP_BYTES = 4 * 1024 * 1024  # what a run's workers buffer before a flush
RECORD_BATCH_ROWS = 1000


def writer_options() -> dict:
    """`pyarrow.parquet.ParquetWriter` keyword arguments for every file vlbeam writes itself
    (the run's sink, empty tables, compaction)."""
    return {
        "compression": CODEC,
        "compression_level": CODEC_LEVEL,
        "use_compliant_nested_type": True,
    }


class RowGroups:
    """Record batches gathered into row groups of about `group_bytes` of Arrow data: the one
    rule of the run's sink and of compaction (each writes a returned group as one row group,
    `row_group_size=group.num_rows`)."""

    def __init__(self, schema: pa.Schema, group_bytes: int) -> None:
        self._schema = schema
        self._group_bytes = group_bytes
        self._batches: list[pa.RecordBatch] = []
        self._bytes = 0

    def add(self, batch: pa.RecordBatch) -> pa.Table | None:
        """Take `batch`; the full group when this batch fills one, else None."""
        self._batches.append(batch)
        self._bytes += batch.nbytes
        return self.rest() if self._bytes >= self._group_bytes else None

    def rest(self) -> pa.Table | None:
        """What is gathered, as a group (None when nothing is)."""
        if not self._batches:
            return None
        group = pa.Table.from_batches(self._batches, schema=self._schema)
        self._batches, self._bytes = [], 0
        return group
