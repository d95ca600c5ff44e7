"""`blocks/`: one row per layout element of a page, in reading order (`block_index`).

`category` is one of `transforms/answers/blocks.CATEGORIES`; `bbox` is in `bbox_unit`: `pt`
(PDF points from the top-left of the page as displayed, after /Rotate and the crop box) or
`px` (pixels of the original image); null where the answer gave no usable box (the Markdown
format, text outside any element). `text` is Markdown; `html` the model's markup of tables and
formulas. `text_source` says where the page's text came from (model | text_layer).
"""

import pyarrow as pa

from vlbeam.schemas.table_meta import table_schema

BBOX = pa.struct(
    [
        pa.field("x0", pa.float64(), nullable=False),
        pa.field("y0", pa.float64(), nullable=False),
        pa.field("x1", pa.float64(), nullable=False),
        pa.field("y1", pa.float64(), nullable=False),
    ]
)

BLOCKS = table_schema(
    "blocks",
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("page_number", pa.int32(), nullable=False),  # 1-based
        pa.field("block_index", pa.int32(), nullable=False),  # 0-based reading order
        pa.field("category", pa.string(), nullable=False),
        pa.field("bbox", BBOX, nullable=True),
        pa.field("bbox_unit", pa.string(), nullable=True),  # pt | px; null without bbox
        pa.field("text", pa.string(), nullable=False),  # Markdown
        pa.field("html", pa.string(), nullable=True),  # tables, formulas
        pa.field("text_source", pa.string(), nullable=False),  # model | text_layer
        pa.field("model", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
