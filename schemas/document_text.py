"""`document_text/`: one row per document with at least one page in `pages`.

`text`: the pages in order as Markdown, each after a `<!-- page N -->` line (a failed page
keeps its marker, `<!-- page N missing -->`, and no text), running headers, footers and page
numbers taken out (`removed` lists them once each); `page_spans`: each page's characters,
`text[start:end]` (Python string offsets, end exclusive); `missing_pages`: pages without a
`pages` row; `status`: complete | partial.
"""

import pyarrow as pa

from vlbeam.schemas.table_meta import list_of, table_schema

PAGE_SPAN = pa.struct(
    [
        pa.field("page_number", pa.int32(), nullable=False),
        pa.field("start", pa.int64(), nullable=False),
        pa.field("end", pa.int64(), nullable=False),
    ]
)

DOCUMENT_TEXT = table_schema(
    "document_text",
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("page_spans", list_of(PAGE_SPAN), nullable=False),
        pa.field("missing_pages", list_of(pa.int32()), nullable=False),
        pa.field("removed", list_of(pa.string()), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # complete | partial
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
