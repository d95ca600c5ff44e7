"""Publishing a run: one Hive-style partition per run, staged then published in one step
(the folder layout: `outputs/layout.py`).

Tables are written to the staging folder and moved into their run partition only
after the job succeeded, so readers never see half-written files and a failed run leaves the
previous output as it was. `--output-mode overwrite` (the default) then removes the other runs'
partitions (a rerun replaces the output); `append` keeps them side by side, for scheduled runs.
Works on any Beam filesystem (local, gs://, s3://).
"""

from __future__ import annotations

import io
import json
import logging
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from vlbeam.outputs.layout import (
    OUTPUT_MODES,
    STAGING,
    files,
    join,
    manifest_path,
    partition_dir,
    partitions,
    runs_dir,
    staging_dir,
)
from vlbeam.schemas.parquet import writer_options

logger = logging.getLogger(__name__)


def publish(
    output: str, run_id: str, tables: dict[str, pa.Schema], mode: str = "overwrite"
) -> dict[str, list[str]]:
    """Move each staged table into its run partition; in overwrite mode, drop
    every other run's partition afterwards."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"output mode must be one of {OUTPUT_MODES}")
    staged = staging_dir(output, run_id)
    published: dict[str, list[str]] = {}
    for table, schema in tables.items():
        src_dir, dst_dir = join(staged, table), partition_dir(output, table, run_id)
        sources = sorted(p for p in files(src_dir) if p.endswith(".parquet"))
        old = files(dst_dir)  # the same run id published before: replace it
        if old:
            FileSystems.delete(old)
        if not FileSystems.exists(dst_dir):
            FileSystems.mkdirs(dst_dir)
        if not sources:  # keep every table readable, even when empty
            _write_empty(join(dst_dir, "part-empty.parquet"), schema)
            published[table] = [join(dst_dir, "part-empty.parquet")]
        else:
            targets = [join(dst_dir, posixpath.basename(p)) for p in sources]
            FileSystems.rename(sources, targets)
            published[table] = targets
        if mode == "overwrite":
            _drop_other_runs(output, table, run_id)
    try:
        FileSystems.delete([staged])
        if not files(join(output, STAGING), "**"):
            FileSystems.delete([join(output, STAGING)])
    except Exception as exc:  # not fatal: the tables are in place
        logger.warning("could not remove %s: %s", staged, exc)
    return published


def _drop_other_runs(output: str, table: str, run_id: str) -> None:
    for other in partitions(output, table) - {run_id}:
        folder = partition_dir(output, table, other)
        inside = files(folder, "**")
        if inside:
            FileSystems.delete(inside)
        if FileSystems.exists(folder):
            FileSystems.delete([folder])
    # files from before partitioned output (flat DIR/<table>/*.parquet) are replaced too
    flat = [p for p in files(join(output, table)) if p.endswith(".parquet")]
    if flat:
        FileSystems.delete(flat)


def _write_empty(path: str, schema: pa.Schema) -> None:
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf, **writer_options())
    with FileSystems.create(path) as handle:
        handle.write(buf.getvalue())


def write_manifest(output: str, run_id: str, manifest: dict) -> str:
    """The run manifest, written in one piece."""
    path = manifest_path(output, run_id)
    if "://" not in output and not FileSystems.exists(runs_dir(output)):
        FileSystems.mkdirs(runs_dir(output))  # object stores have no folders to make
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())
    return path
