"""`video_windows/`: one row per video window the model answered (raw answer kept)."""

import pyarrow as pa

VIDEO_WINDOWS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("window_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("frame_times_s", pa.list_(pa.float64()), nullable=False),
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("raw_output", pa.string(), nullable=True),
        pa.field("input_tokens", pa.int32(), nullable=True),
        pa.field("output_tokens", pa.int32(), nullable=True),
        pa.field("finish_reason", pa.string(), nullable=True),
        pa.field("latency_s", pa.float64(), nullable=True),
        pa.field("provider", pa.string(), nullable=True),  # API backend: the preset used
        pa.field("served_model", pa.string(), nullable=True),  # as the server reports it
        pa.field("request_id", pa.string(), nullable=True),
        pa.field("reasoning", pa.string(), nullable=True),  # thinking models, apart from text
        pa.field("cost_usd", pa.float64(), nullable=True),  # when prices are configured
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
