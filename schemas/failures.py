"""`failures/`: one row per failure at any stage (dead letters of every step)."""

import pyarrow as pa

from vlbeam.schemas.table_meta import table_schema

FAILURES = table_schema(
    "failures",
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=True),
        # ingest | sniff | task | split | render | decode | inference | parse
        pa.field("stage", pa.string(), nullable=False),
        # page number (1-based) for pages, window index (0-based) for video windows
        pa.field("unit", pa.int32(), nullable=True),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
