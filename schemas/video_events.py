"""`video_events/`: one row per time span, merged across windows (see README for the rule)."""

import pyarrow as pa

from vlbeam.schemas.table_meta import list_of, table_schema

VIDEO_EVENTS = table_schema(
    "video_events",
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=True),  # null for the event timeline
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("description", pa.string(), nullable=True),
        pa.field("window_indexes", list_of(pa.int32()), nullable=False),
        # coarse-to-fine: the coarse windows that led to the refine windows it came from
        pa.field("coarse_window_indexes", list_of(pa.int32()), nullable=True),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
