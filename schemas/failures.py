"""`failures/`: one row per failure at any stage (dead letters of every step)."""

import pyarrow as pa

FAILURES = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=True),
        pa.field("stage", pa.string(), nullable=False),  # ingest|sniff|task|split|render|inference
        pa.field("unit", pa.int32(), nullable=True),  # page number (1-based) when page-level
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
