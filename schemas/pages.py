"""`pages/`: one row per page whose OCR succeeded (failed pages are in `failures/`)."""

import pyarrow as pa

PAGES = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("page_number", pa.int32(), nullable=False),  # 1-based
        pa.field("width_px", pa.int32(), nullable=False),
        pa.field("height_px", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=True),  # the model's markdown
        pa.field("text_layer", pa.string(), nullable=True),  # the PDF's own text, if any
        pa.field("model", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("input_tokens", pa.int32(), nullable=True),
        pa.field("output_tokens", pa.int32(), nullable=True),
        pa.field("finish_reason", pa.string(), nullable=True),  # stop | length
        pa.field("latency_s", pa.float64(), nullable=True),
        pa.field("provider", pa.string(), nullable=True),  # API backend: the preset used
        pa.field("served_model", pa.string(), nullable=True),  # as the server reports it
        pa.field("request_id", pa.string(), nullable=True),
        pa.field("reasoning", pa.string(), nullable=True),  # thinking models, apart from text
        pa.field("cost_usd", pa.float64(), nullable=True),  # when prices are configured
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
