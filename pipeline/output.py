"""Output folder management: stage a run's tables, then publish them in one step.

Tables are written under `DIR/_staging/<run_id>/<table>/` and, once the job has
succeeded, replace `DIR/<table>/` (overwrite semantics): a rerun never leaves a
mix of old and new files, and a failed run leaves the previous output in place.
Works on any Beam filesystem (local, gs://, s3://).
"""

from __future__ import annotations

import io
import logging
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

logger = logging.getLogger(__name__)

STAGING = "_staging"


def join(*parts: str) -> str:
    return FileSystems.join(*parts) if "://" in parts[0] else posixpath.join(*parts)


def staging_dir(output: str, run_id: str) -> str:
    return join(output, STAGING, run_id)


def _files(folder: str, pattern: str = "*") -> list[str]:
    try:
        return [m.path for m in FileSystems.match([join(folder, pattern)])[0].metadata_list]
    except Exception:  # a missing folder matches nothing
        return []


def publish(output: str, run_id: str, tables: dict[str, pa.Schema]) -> dict[str, list[str]]:
    """Move each staged table into `output/<table>/`, replacing what was there."""
    staged = staging_dir(output, run_id)
    published: dict[str, list[str]] = {}
    for table, schema in tables.items():
        src_dir, dst_dir = join(staged, table), join(output, table)
        sources = sorted(p for p in _files(src_dir) if p.endswith(".parquet"))
        old = _files(dst_dir)
        if old:
            FileSystems.delete(old)
        if not FileSystems.exists(dst_dir):
            FileSystems.mkdirs(dst_dir)
        if not sources:  # keep every table readable, even when empty
            _write_empty(join(dst_dir, "part-empty.parquet"), schema)
            published[table] = [join(dst_dir, "part-empty.parquet")]
            continue
        targets = [join(dst_dir, posixpath.basename(p)) for p in sources]
        FileSystems.rename(sources, targets)
        published[table] = targets
    try:
        FileSystems.delete([staged])
        if not _files(join(output, STAGING), "**"):
            FileSystems.delete([join(output, STAGING)])
    except Exception as exc:  # not fatal: the tables are in place
        logger.warning("could not remove %s: %s", staged, exc)
    return published


def _write_empty(path: str, schema: pa.Schema) -> None:
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf)
    with FileSystems.create(path) as handle:
        handle.write(buf.getvalue())
