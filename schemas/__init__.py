"""Explicit pyarrow schemas, one per output table."""

from vlbeam.schemas.documents import DOCUMENTS
from vlbeam.schemas.failures import FAILURES
from vlbeam.schemas.pages import PAGES

TABLES = {"documents": DOCUMENTS, "pages": PAGES, "failures": FAILURES}

__all__ = ["DOCUMENTS", "FAILURES", "PAGES", "TABLES"]
