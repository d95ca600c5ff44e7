"""Explicit pyarrow schemas, one per output table (each carries its footer metadata)."""

from vlbeam.schemas.documents import DOCUMENTS
from vlbeam.schemas.failures import FAILURES
from vlbeam.schemas.pages import PAGES
from vlbeam.schemas.table_meta import SCHEMA_VERSION, TABLE_KEY, VERSION_KEY
from vlbeam.schemas.video_events import VIDEO_EVENTS
from vlbeam.schemas.video_windows import VIDEO_WINDOWS

TABLES = {
    "documents": DOCUMENTS,
    "pages": PAGES,
    "video_windows": VIDEO_WINDOWS,
    "video_events": VIDEO_EVENTS,
    "failures": FAILURES,
}

__all__ = [
    "DOCUMENTS",
    "FAILURES",
    "PAGES",
    "SCHEMA_VERSION",
    "TABLES",
    "TABLE_KEY",
    "VERSION_KEY",
    "VIDEO_EVENTS",
    "VIDEO_WINDOWS",
]
