"""Each output table as a Beam schema: one row type per table, derived from its pyarrow schema
(`schemas/`) by Beam's own Arrow mapping, so `beam.Select`, `SqlTransform`, DataFrames and
schema-aware sinks take vlbeam's rows.

pyarrow → Beam: string → str, int32/int64 → int32/int64, float64 → double, list → array
(`Sequence`), map<string, string> → map (`Mapping[str, str]`), nullable → Optional.
"""

from __future__ import annotations

import functools

import apache_beam as beam


@functools.cache
def row_type(table: str) -> type:
    """The NamedTuple type (with its Beam schema registered) of `table`'s rows; its fields
    are the table's columns, in order."""
    from apache_beam.typehints import schemas
    from apache_beam.typehints.arrow_type_compatibility import beam_schema_from_arrow_schema

    from vlbeam.schemas import TABLES

    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; tables are {list(TABLES)}")
    beam_schema = beam_schema_from_arrow_schema(TABLES[table])
    # a stable id per table and layout, so every process derives the same type
    from vlbeam.schemas import SCHEMA_VERSION

    beam_schema.id = f"vlbeam_{table}_v{SCHEMA_VERSION}"
    return schemas.named_tuple_from_schema(beam_schema)


def to_row(row: dict, table: str):
    """One row of `table` (a dict with the table's columns) as its Beam row type."""
    return row_type(table)(**row)


class ToRows(beam.PTransform):
    """dict rows of `table` → rows of `row_type(table)`: a schema'd PCollection."""

    def __init__(self, table: str) -> None:
        super().__init__()
        self._table = table
        self._type = row_type(table)  # fails here, at construction, for an unknown table

    def expand(self, rows):
        return rows | "AsRow" >> beam.Map(to_row, self._table).with_output_types(self._type)
