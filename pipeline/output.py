"""Output folder layout: one Hive-style partition per run, staged then published in one step.

    DIR/<table>/run=<run_id>/part-*.parquet      every table, one folder per run
    DIR/_runs/<run_id>.json                      the run manifest
    DIR/_staging/<run_id>/<table>/               while the job runs (never read)

Tables are written to the staging folder and moved into their `run=<run_id>` partition only
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

from vlbeam.transforms.write import writer_options

logger = logging.getLogger(__name__)

STAGING = "_staging"
RUNS = "_runs"
COMPACTIONS = "_compactions"
PARTITION = "run"
OUTPUT_MODES = ("overwrite", "append")


def join(*parts: str) -> str:
    return FileSystems.join(*parts) if "://" in parts[0] else posixpath.join(*parts)


def staging_dir(output: str, run_id: str) -> str:
    return join(output, STAGING, run_id)


def partition_dir(output: str, table: str, run_id: str) -> str:
    return join(output, table, f"{PARTITION}={run_id}")


def table_glob(output: str, table: str) -> str:
    """Every Parquet file of a table, all runs."""
    return join(output, table, f"{PARTITION}=*", "*.parquet")


def _files(folder: str, pattern: str = "*") -> list[str]:
    try:
        return [m.path for m in FileSystems.match([join(folder, pattern)])[0].metadata_list]
    except Exception:  # a missing folder matches nothing
        return []


def _partitions(output: str, table: str) -> set[str]:
    """The run partitions (folders) a table has, from its files."""
    prefix = join(output, table, f"{PARTITION}=")
    return {p[len(prefix) :].split("/", 1)[0] for p in _files(join(output, table), "*/*")
            if p.startswith(prefix)}  # fmt: skip


def publish(
    output: str, run_id: str, tables: dict[str, pa.Schema], mode: str = "overwrite"
) -> dict[str, list[str]]:
    """Move each staged table into its `run=<run_id>` partition; in overwrite mode, drop
    every other run's partition afterwards."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"output mode must be one of {OUTPUT_MODES}")
    staged = staging_dir(output, run_id)
    published: dict[str, list[str]] = {}
    for table, schema in tables.items():
        src_dir, dst_dir = join(staged, table), partition_dir(output, table, run_id)
        sources = sorted(p for p in _files(src_dir) if p.endswith(".parquet"))
        old = _files(dst_dir)  # the same run id published before: replace it
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
        if not _files(join(output, STAGING), "**"):
            FileSystems.delete([join(output, STAGING)])
    except Exception as exc:  # not fatal: the tables are in place
        logger.warning("could not remove %s: %s", staged, exc)
    return published


def _drop_other_runs(output: str, table: str, run_id: str) -> None:
    for other in _partitions(output, table) - {run_id}:
        folder = partition_dir(output, table, other)
        files = _files(folder, "**")
        if files:
            FileSystems.delete(files)
        if FileSystems.exists(folder):
            FileSystems.delete([folder])
    # files from before partitioned output (flat DIR/<table>/*.parquet) are replaced too
    flat = [p for p in _files(join(output, table)) if p.endswith(".parquet")]
    if flat:
        FileSystems.delete(flat)


def _write_empty(path: str, schema: pa.Schema) -> None:
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf, **writer_options())
    with FileSystems.create(path) as handle:
        handle.write(buf.getvalue())


def write_manifest(output: str, run_id: str, manifest: dict) -> str:
    """`DIR/_runs/<run_id>.json`, written in one piece."""
    path = join(output, RUNS, f"{run_id}.json")
    if "://" not in output and not FileSystems.exists(join(output, RUNS)):
        FileSystems.mkdirs(join(output, RUNS))  # object stores have no folders to make
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())
    return path
