"""What every Parquet file of every table says about itself (its footer's key-value metadata).

`vlbeam.schema_version` changes whenever a column is added, removed, renamed or retyped in
any table, so a reader can tell which layout a file has without guessing from its columns.
Version 1 is the unversioned layout written before this key existed (nullable list elements);
version 3 added `pages.text_source`, `quality_flags`, `text_layer_agreement`, `retries` and
`video_windows.quality_flags`; version 4 added the tables `blocks`, `tables`, `figures` and
`document_text`, and `video_windows.grounding_pass`, `candidate_queries`, `coarse_windows` and
`video_events.coarse_window_indexes` (all nullable: older files read as nulls); version 5
added `meta` (the caller's carried keys, `schemas/meta.py`) to every table, and the
`extractions` table; version 6 added `pages.page_meta` (--model-preset olmocr-2's front
matter; nullable).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "6"
VERSION_KEY = "vlbeam.schema_version"
TABLE_KEY = "vlbeam.table"


def table_metadata(table: str) -> dict[str, str]:
    return {VERSION_KEY: SCHEMA_VERSION, TABLE_KEY: table}


def list_of(value_type: pa.DataType) -> pa.ListType:
    """A list whose elements are never null (Parquet `required` element; Spark
    `containsNull = false`), the element named `element` as the Parquet LIST spec has it."""
    return pa.list_(pa.field("element", value_type, nullable=False))


# the caller's own keys carried from an input to every row made from it (`schemas/meta.py`);
# null when the input carried none
META_FIELD = pa.field("meta", pa.map_(pa.string(), pa.string()), nullable=True)


def table_schema(table: str, fields: list[pa.Field]) -> pa.Schema:
    """The schema of the output table `table`: its own `fields`, then the columns every
    table has (`meta`), with the footer metadata. Every table's schema is made here, so a
    column every table shares is added once."""
    return pa.schema([*fields, META_FIELD], metadata=table_metadata(table))
