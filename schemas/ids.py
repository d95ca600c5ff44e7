"""Deterministic ids: documents are named by the SHA-256 of their bytes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from vlbeam.schemas.meta import Meta, canonical_meta_json


def sha256_hex(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id such as `20261122T083000Z-3fa2c1`."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def document_id(content_sha256: str, meta: Meta = None) -> str:
    """A document's `doc_id`: the SHA-256 of its bytes when it carries no keys (so outputs
    without `meta` keep their ids), else the SHA-256 of `"<content sha256>\\n<canonical JSON
    of meta>"` (`schemas.meta.canonical_meta_json`). The same file listed twice with
    different keys is two documents with two ids; listed twice with the same keys, one.
    Anyone holding the file and the `meta` column can recompute it."""
    if not meta:
        return content_sha256
    text = f"{content_sha256}\n{canonical_meta_json(meta)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
