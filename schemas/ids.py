"""Deterministic ids: documents are named by the SHA-256 of their bytes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime


def sha256_hex(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id such as `20261122T083000Z-3fa2c1`."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
