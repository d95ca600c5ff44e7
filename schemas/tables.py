"""`tables/`: one row per table of a document; a table continued on the next page is one row
listing both pages (the rule: `transforms/answers/tables.py`, README "Tables across pages").

`header`: the column names (empty when the table has none); `rows`: the body rows, every one
`n_cols` cells long (rowspan and colspan expanded); `bbox` (in `bbox_unit`, see `blocks`) is
the box of its first part.
"""

import pyarrow as pa

from vlbeam.schemas.blocks import BBOX
from vlbeam.schemas.table_meta import list_of, table_schema

TABLES = table_schema(
    "tables",
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("page_numbers", list_of(pa.int32()), nullable=False),
        pa.field("table_index", pa.int32(), nullable=False),  # 0-based, in document order
        pa.field("html", pa.string(), nullable=False),
        pa.field("header", list_of(pa.string()), nullable=False),
        pa.field("rows", list_of(list_of(pa.string())), nullable=False),
        pa.field("n_rows", pa.int32(), nullable=False),
        pa.field("n_cols", pa.int32(), nullable=False),
        pa.field("bbox", BBOX, nullable=True),
        pa.field("bbox_unit", pa.string(), nullable=True),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
