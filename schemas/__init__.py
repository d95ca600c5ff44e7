"""The data contracts: explicit pyarrow schemas, one per output table (each carries its footer
metadata), and the ground types every layer imports (`elements`, `errors`, `config`, `ids`).

The table schemas load on first use (PEP 562), so importing a ground type (say, from the
helper process, which runs under a tight address-space limit) doesn't import pyarrow.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "DOCUMENTS": ("documents", "DOCUMENTS"),
    "EXTRACTIONS": ("extractions", "EXTRACTIONS"),
    "FAILURES": ("failures", "FAILURES"),
    "PAGES": ("pages", "PAGES"),
    "VIDEO_EVENTS": ("video_events", "VIDEO_EVENTS"),
    "VIDEO_WINDOWS": ("video_windows", "VIDEO_WINDOWS"),
    "BLOCKS": ("blocks", "BLOCKS"),
    "TABLES_TABLE": ("tables", "TABLES"),
    "FIGURES": ("figures", "FIGURES"),
    "DOCUMENT_TEXT": ("document_text", "DOCUMENT_TEXT"),
    "SCHEMA_VERSION": ("table_meta", "SCHEMA_VERSION"),
    "TABLE_KEY": ("table_meta", "TABLE_KEY"),
    "VERSION_KEY": ("table_meta", "VERSION_KEY"),
}
_TABLE_NAMES = (
    "documents", "pages", "video_windows", "video_events", "failures",
    "blocks", "tables", "figures", "document_text", "extractions",
)  # fmt: skip


def __getattr__(name: str):
    if name == "TABLES":
        tables = {t: getattr(importlib.import_module(f"{__name__}.{t}"), t.upper())
                  for t in _TABLE_NAMES}  # fmt: skip
        globals()["TABLES"] = tables
        return tables
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TABLES", *_LAZY]
