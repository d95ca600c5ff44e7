"""Columns every model-output table carries about the model call that produced the row."""

import pyarrow as pa

MODEL_CALL_FIELDS = [
    pa.field("input_tokens", pa.int32(), nullable=True),
    pa.field("output_tokens", pa.int32(), nullable=True),
    pa.field("finish_reason", pa.string(), nullable=True),  # stop | length
    pa.field("latency_s", pa.float64(), nullable=True),  # wall time of the call (the batch's)
    pa.field("provider", pa.string(), nullable=True),  # API backend: the preset used
    pa.field("served_model", pa.string(), nullable=True),  # as the server reports it
    pa.field("request_id", pa.string(), nullable=True),
    pa.field("reasoning", pa.string(), nullable=True),  # thinking models, apart from text
    pa.field("cost_usd", pa.float64(), nullable=True),  # when prices are configured
]
