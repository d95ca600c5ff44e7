"""`extractions/`: one row per document (or page, `--extract-scope page`) that `--extract`
asked the model about, valid or not (an answer that never validated is kept with
`valid = false` and its raw text); a request that failed is a `failures` row instead."""

import pyarrow as pa

from vlbeam.schemas.model_call import MODEL_CALL_FIELDS
from vlbeam.schemas.table_meta import list_of, table_schema

EXTRACTIONS = table_schema(
    "extractions",
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False),  # document | page
        pa.field("page_number", pa.int32(), nullable=True),  # null for documents
        pa.field("schema_id", pa.string(), nullable=False),  # title:sha256[:12] of the schema
        pa.field("json", pa.string(), nullable=True),  # the answer (raw text when invalid)
        pa.field("valid", pa.bool_(), nullable=False),  # json validates against the schema
        pa.field("errors", list_of(pa.string()), nullable=False),  # validator messages
        pa.field("attempts", pa.int32(), nullable=False),  # model calls made (retries + 1)
        # the mechanism that constrained decoding: response_format:json_schema,
        # response_format:json_object, llguidance, or none (prompt + validate + retry)
        pa.field("guided", pa.string(), nullable=False),
        pa.field("extract_from", pa.string(), nullable=False),  # text | images
        pa.field("chunks", pa.int32(), nullable=False),  # parts of an over-long text (1: whole)
        # over-long text: which chunk (0-based) each top-level scalar came from (JSON object)
        pa.field("field_chunks", pa.string(), nullable=True),
        pa.field("model", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        *MODEL_CALL_FIELDS,
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
