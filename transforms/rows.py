"""Each output table as a Beam schema: one row type per table, derived from its pyarrow schema
(`schemas/`) by Beam's own Arrow mapping, so `beam.Select`, `SqlTransform`, DataFrames and
schema-aware sinks take vlbeam's rows.

pyarrow → Beam: string → str, int32/int64 → int32/int64, float64 → double, list → array
(`Sequence`), map<string, string> → map (`Mapping[str, str]`), struct → a nested row (`bbox`,
`page_spans`' elements), nullable → Optional.
"""

from __future__ import annotations

import collections.abc
import functools
import types
import typing

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
    for field in beam_schema.fields:  # nested rows (structs) too
        _name_nested(field.type, f"vlbeam_{table}_{field.name}_v{SCHEMA_VERSION}")
    return schemas.named_tuple_from_schema(beam_schema)


def _name_nested(field_type, schema_id: str) -> None:
    """Give a struct inside a field (directly or as list elements) a stable schema id."""
    kind = field_type.WhichOneof("type_info")
    if kind == "row_type":
        field_type.row_type.schema.id = schema_id
    elif kind == "array_type":
        _name_nested(field_type.array_type.element_type, schema_id)


def _is_row_type(hint) -> bool:
    return isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields")


@functools.cache
def _converter(hint):
    """A function turning a value of the dict form into `hint`'s form (nested struct dicts
    into their row types, through lists and Optionals); None where the value stays as is."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = _converter(next(a for a in args if a is not type(None)))
        return None if inner is None else (lambda v: None if v is None else inner(v))
    if origin in (collections.abc.Sequence, list):
        item = _converter(args[0])
        return None if item is None else (lambda v: [item(x) for x in v])
    user_type = getattr(hint, "user_type", None)  # a nested row: Beam's RowTypeConstraint
    if _is_row_type(user_type):
        return functools.partial(_build, user_type)
    if _is_row_type(hint):
        return functools.partial(_build, hint)
    return None


def _build(row_cls: type, values: dict):
    fields = {}
    for name, hint in row_cls.__annotations__.items():
        convert = _converter(hint)
        value = values[name]
        fields[name] = convert(value) if convert is not None else value
    return row_cls(**fields)


def to_row(row: dict, table: str):
    """One row of `table` (a dict with the table's columns) as its Beam row type."""
    return _build(row_type(table), row)


class ToRows(beam.PTransform):
    """dict rows of `table` → rows of `row_type(table)`: a schema'd PCollection."""

    def __init__(self, table: str) -> None:
        super().__init__()
        self._table = table
        self._type = row_type(table)  # fails here, at construction, for an unknown table

    def expand(self, rows):
        return rows | "AsRow" >> beam.Map(to_row, self._table).with_output_types(self._type)
