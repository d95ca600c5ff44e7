"""`video_windows/`: one row per video window the model answered (raw answer kept)."""

import pyarrow as pa

from vlbeam.schemas.model_call import MODEL_CALL_FIELDS
from vlbeam.schemas.table_meta import list_of, table_schema

VIDEO_WINDOWS = table_schema(
    "video_windows",
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("window_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("frame_times_s", list_of(pa.float64()), nullable=False),  # every frame has one
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("raw_output", pa.string(), nullable=True),
        pa.field(
            "quality_flags", list_of(pa.string()), nullable=False
        ),  # repetition, length, empty
        *MODEL_CALL_FIELDS,
        # dense | coarse | refine (--grounding-strategy); null in files written before it
        pa.field("grounding_pass", pa.string(), nullable=True),
        # coarse rows: the queries this window found candidates for (every query when its
        # answer could not be read); [] says no query may happen here. Null on other passes.
        pa.field("candidate_queries", list_of(pa.string()), nullable=True),
        # refine rows: the coarse windows whose candidates led to this window
        pa.field("coarse_windows", list_of(pa.int32()), nullable=True),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
