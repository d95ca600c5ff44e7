"""Carried keys: the caller's own columns that travel with an input file to every row made
from it (the `meta` column, `map<string, string>`, of every table).

An input given as `{"uri": "gs://b/a.pdf", "customer_id": 7}` (to `vlbeam.Process`, or a row
of `--input-manifest`) carries `{"customer_id": "7"}`. Inside the pipeline the keys travel as
`Meta`: a tuple of (key, value) string pairs sorted by key (hashable, so it can be part of a
grouping key, and one spelling per mapping); `None` when there are none. Pure: no pyarrow,
no Beam (the helper process imports the ground types).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

Meta = tuple[tuple[str, str], ...] | None

URI_KEY = "uri"


def meta_value(value: Any) -> str:
    """A carried value as the string the `meta` column holds: strings as they are, bools as
    `true`/`false`, dates and times in ISO 8601, bytes as UTF-8, anything else (numbers,
    lists, objects) as its JSON text (`7`, `1.5`, `["a"]`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def normalize_meta(extra: Mapping[str, Any] | None) -> Meta:
    """The carried keys of one input (its `uri` key excluded; a key whose value is None is
    dropped), as `Meta`: None when nothing is left."""
    if not extra:
        return None
    pairs = tuple(
        sorted(
            (str(key), meta_value(value))
            for key, value in extra.items()
            if key != URI_KEY and value is not None
        )
    )
    return pairs or None


def meta_column(meta: Meta) -> dict[str, str] | None:
    """The `meta` cell of a row: a dict (pyarrow writes it as a map), or None."""
    return dict(meta) if meta else None


def canonical_meta_json(meta: Meta) -> str:
    """One spelling of a set of carried keys (sorted keys, no spaces, UTF-8 as is): the text
    `schemas.ids.document_id` hashes."""
    return json.dumps(dict(meta or ()), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
