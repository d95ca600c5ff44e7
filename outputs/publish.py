"""Publishing a run: one Hive-style partition per run, committed in one step (the folder
layout and what counts as committed: `outputs/layout.py`).

A run's tables are written to its attempt's own staging folder (`_staging/<run_id>/<attempt>/`),
so nothing an earlier attempt left there is ever published. After the job succeeded, under the
output's publish lease (outputs/lease.py: one publisher at a time, on any filesystem):

1. files no commit record lists are removed (what a publisher killed before its commit moved
   in place, partitions an earlier overwrite superseded);
2. every table's staged files are moved into `<table>/run=<run_id>/`, each named
   `<attempt>--part-….parquet`, so they never replace a committed file of the same run id;
3. the run is committed in one step: its manifest `_runs/<run_id>.json` is written whole,
   with `status: succeeded` and the commit (its lease generation as `seq`, the mode, the file
   names per table). From this moment vlbeam's readers see the new run; before it, the old;
4. only then is what the commit hid deleted: the same run id's older files and, in overwrite
   mode, every other run's partitions; then the attempt's staging folder, and staging
   folders of attempts that are over (failed, or dead: outputs/attempt.py).

A failure or a kill before step 3 leaves the output as vlbeam's readers saw it (a later publish
removes the leftovers); after it, the new run (a later publish finishes step 4). Two runs
publishing into one output at once take turns; the later commit wins in overwrite mode, and
both stay in append mode. A plain glob reader (`DIR/pages/**/*.parquet`) is not protected: from
step 2 to step 4 it sees both the old and the new run's files.
Works on any Beam filesystem (local, gs://, s3://).
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from vlbeam.outputs.attempt import collect_staging
from vlbeam.outputs.layout import (
    OUTPUT_MODES,
    attempt_file_name,
    committed_view,
    files,
    join,
    manifest_path,
    partition_dir,
    staging_dir,
)
from vlbeam.outputs.lease import PublishLease
from vlbeam.outputs.store import delete_quietly, write_whole
from vlbeam.schemas.parquet import writer_options

logger = logging.getLogger(__name__)


def publish(
    output: str,
    run_id: str,
    tables: dict[str, pa.Schema],
    mode: str = "overwrite",
    *,
    attempt: str,
    manifest: dict | None = None,
    lease: PublishLease | None = None,
) -> dict[str, list[str]]:
    """Publish the attempt's staged tables and commit the run (see the module docstring);
    `manifest` is the run manifest the commit record carries. Returns each table's files."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"output mode must be one of {OUTPUT_MODES}")
    own = lease is None
    lease = lease or PublishLease(output, attempt, run_id)
    if own:
        lease.acquire()
    try:
        drop_uncommitted(output, tables)
        staged = staging_dir(output, run_id, attempt)
        published: dict[str, list[str]] = {}
        for table, schema in tables.items():
            published[table] = _move_table(output, table, schema, run_id, attempt, staged)
            lease.keep()
        lease.check()  # fencing: never commit on a lease another publisher took
        commit = {
            "seq": lease.generation,
            "mode": mode,
            "attempt": attempt,
            "committed_at": datetime.now(UTC).isoformat(),
            "files": {t: [posixpath.basename(p) for p in paths] for t, paths in published.items()},
        }
        record = {**(manifest or {"run_id": run_id}), "status": "succeeded", "commit": commit}
        write_manifest(output, run_id, record)  # the commit
        _after_commit(output, tables, mode, staged)
        return published
    finally:
        if own:
            lease.release()


def _move_table(
    output: str, table: str, schema: pa.Schema, run_id: str, attempt: str, staged: str
) -> list[str]:
    sources = sorted(p for p in files(join(staged, table)) if p.endswith(".parquet"))
    dst_dir = partition_dir(output, table, run_id)
    if "://" not in output and not FileSystems.exists(dst_dir):
        FileSystems.mkdirs(dst_dir)  # object stores have no folders to make
    if not sources:  # keep every table readable, even when empty
        target = join(dst_dir, attempt_file_name(attempt, "part-empty.parquet"))
        _write_empty(target, schema)
        return [target]
    targets = [join(dst_dir, attempt_file_name(attempt, posixpath.basename(p))) for p in sources]
    FileSystems.rename(sources, targets)
    return targets


def drop_uncommitted(output: str, tables) -> None:
    """Delete every table file no visible commit lists: partitions an overwrite superseded
    or no commit kept, and files of attempts that never committed. Call it holding the lease
    (nobody else is moving files then)."""
    view = committed_view(output, tables)
    for table in tables:
        delete_quietly(view.garbage(table))
        for partition in set(view.present.get(table, {})) - set(view.visible):
            folder = partition_dir(output, table, partition)
            if "://" not in output and FileSystems.exists(folder):
                delete_quietly([folder])  # the emptied folder of a dropped partition


def _after_commit(output: str, tables, mode: str, staged: str) -> None:
    """What the commit hid, deleted; not fatal: a later publish finishes it."""
    try:
        drop_uncommitted(output, tables)
        if mode == "overwrite":  # files from before partitioned output (flat DIR/<table>/*)
            for table in tables:
                delete_quietly([p for p in files(join(output, table)) if p.endswith(".parquet")])
        delete_quietly([staged])
        collect_staging(output)
    except Exception as exc:
        logger.warning("committed, but could not remove what it replaced: %s", exc)


def _write_empty(path: str, schema: pa.Schema) -> None:
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf, **writer_options())
    with FileSystems.create(path) as handle:
        handle.write(buf.getvalue())


def write_manifest(output: str, run_id: str, manifest: dict) -> str:
    """The run manifest, written whole (a reader sees the old one or the new one)."""
    path = manifest_path(output, run_id)
    write_whole(path, json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())
    return path
