"""`pages/`: one row per page whose OCR succeeded (failed pages are in `failures/`)."""

import pyarrow as pa

from vlbeam.schemas.model_call import MODEL_CALL_FIELDS
from vlbeam.schemas.table_meta import list_of, table_schema

# olmOCR 2's front matter (olmocr/prompts/prompts.py::PageResponse), typed, plus `rotation`:
# the degrees vlbeam turned the page (counter-clockwise) before the answer kept
PAGE_META = pa.struct(
    [
        pa.field("primary_language", pa.string(), nullable=True),
        pa.field("is_rotation_valid", pa.bool_(), nullable=False),
        pa.field("rotation_correction", pa.int32(), nullable=False),
        pa.field("is_table", pa.bool_(), nullable=False),
        pa.field("is_diagram", pa.bool_(), nullable=False),
        pa.field("rotation", pa.int32(), nullable=False),
    ]
)

PAGES = table_schema(
    "pages",
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("page_number", pa.int32(), nullable=False),  # 1-based
        pa.field("width_px", pa.int32(), nullable=False),
        pa.field("height_px", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=True),  # the model's markdown (or see text_source)
        pa.field("text_layer", pa.string(), nullable=True),  # the PDF's own text, if any
        pa.field("text_source", pa.string(), nullable=False),  # model | text_layer | blank
        pa.field(
            "quality_flags", list_of(pa.string()), nullable=False
        ),  # repetition, length, empty
        pa.field("text_layer_agreement", pa.float64(), nullable=True),  # 1 - CER (compare)
        pa.field("retries", pa.int32(), nullable=False),  # extra calls (retries, rotation)
        # the page's metadata as its model answered it (--model-preset olmocr-2's front
        # matter); null for models that give none, or when the answer could not be read
        pa.field("page_meta", PAGE_META, nullable=True),
        pa.field("model", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        *MODEL_CALL_FIELDS,
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
