"""`documents/`: exactly one row per matched input file, whatever happened to it."""

import pyarrow as pa

from vlbeam.schemas.table_meta import table_schema

DOCUMENTS = table_schema(
    "documents",
    [
        pa.field("doc_id", pa.string(), nullable=True),  # SHA-256 of the bytes; null if unreadable
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # pdf | image | video | audio | unknown
        pa.field("size_bytes", pa.int64(), nullable=True),
        pa.field("status", pa.string(), nullable=False),  # ok | partial | failed | skipped
        pa.field("num_pages", pa.int32(), nullable=True),  # documents
        pa.field("duration_s", pa.float64(), nullable=True),  # videos
        pa.field("num_failures", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=True),
        pa.field("backend", pa.string(), nullable=True),
        pa.field("prompt_id", pa.string(), nullable=True),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
