"""The output dataset on disk: every path vlbeam reads or writes under `--output DIR`.

    DIR/<table>/run=<run_id>/part-*.parquet      every table, one Hive partition per run
    DIR/_runs/<run_id>.json                      the run manifest
    DIR/_staging/<run_id>/<table>/               while the job runs (never read)
    DIR/_compactions/<id>.json                   what `vlbeam compact` did
    DIR/_compact/<id>/, DIR/_compact.lock        while `vlbeam compact` works

This module is the only one that spells these names: publishing, the manifest, compaction,
the DuckDB loader and the report all ask it (tests/test_layers.py checks). Paths work on any
Beam filesystem (local, gs://, s3://) except where a function says it is local.
"""

from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path

logger = logging.getLogger(__name__)

STAGING = "_staging"
RUNS = "_runs"
COMPACTIONS = "_compactions"
COMPACT_WORK = "_compact"
COMPACT_LOCK = "_compact.lock"
PARTITION = "run"
OUTPUT_MODES = ("overwrite", "append")


def join(*parts: str) -> str:
    if "://" in parts[0]:
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.join(*parts)
    return posixpath.join(*parts)


def partition_name(run_id: str) -> str:
    """The folder name of a run's partition: `run=<run_id>`."""
    return f"{PARTITION}={run_id}"


def run_of_partition(name: str) -> str | None:
    """The run id a partition folder name stands for; None for another folder."""
    prefix = f"{PARTITION}="
    return name[len(prefix) :] if name.startswith(prefix) else None


def staging_dir(output: str, run_id: str) -> str:
    return join(output, STAGING, run_id)


def partition_dir(output: str, table: str, run_id: str) -> str:
    return join(output, table, partition_name(run_id))


def table_glob(output: str, table: str) -> str:
    """Every Parquet file of a table, all runs."""
    return join(output, table, partition_name("*"), "*.parquet")


def manifest_path(output: str, run_id: str) -> str:
    return join(output, RUNS, f"{run_id}.json")


def runs_dir(output: str) -> str:
    return join(output, RUNS)


def compaction_record(output: str, compaction_id: str) -> str:
    return join(output, COMPACTIONS, f"{compaction_id}.json")


def match(pattern: str) -> list[str]:
    """The paths a glob matches, sorted; a missing folder matches nothing."""
    from apache_beam.io.filesystems import FileSystems

    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # a missing folder matches nothing
        return []


def files(folder: str, pattern: str = "*") -> list[str]:
    """The files in `folder` matching `pattern` (unsorted, as the filesystem lists them)."""
    from apache_beam.io.filesystems import FileSystems

    try:
        return [m.path for m in FileSystems.match([join(folder, pattern)])[0].metadata_list]
    except Exception:  # a missing folder matches nothing
        return []


def partitions(output: str, table: str) -> set[str]:
    """The run ids a table has partitions for, from its files."""
    prefix = join(output, table, partition_name(""))
    return {p[len(prefix) :].split("/", 1)[0] for p in files(join(output, table), "*/*")
            if p.startswith(prefix)}  # fmt: skip


def partition_files(output: str, table: str, run_id: str) -> list[str]:
    """A run's Parquet files of one table, sorted."""
    return match(join(partition_dir(output, table, run_id), "*.parquet"))


def open_parquet(path: str):
    """A `pyarrow.parquet.ParquetFile` on a local path or any Beam filesystem URI."""
    import pyarrow.parquet as pq

    if "://" not in path:
        return pq.ParquetFile(path)
    from apache_beam.io.filesystems import FileSystems

    return pq.ParquetFile(FileSystems.open(path, compression_type="uncompressed"))


def read_text(path: str) -> str:
    from vlbeam.transforms.media.files import read_uri

    return read_uri(path).decode("utf-8")


def list_runs(output: str, tables) -> tuple[dict[str, dict | None], set[str]]:
    """Every run of an output folder (a table partition or a manifest) with its manifest, and
    the runs that have tables (a failed run has a manifest only)."""
    runs: dict[str, dict | None] = {}
    published: set[str] = set()
    for table in tables:
        for path in match(table_glob(output, table)):
            run_id = run_of_partition(path.rsplit("/", 2)[-2])
            if run_id is not None:
                runs.setdefault(run_id, None)
                published.add(run_id)
    for path in match(join(runs_dir(output), "*.json")):
        run_id = posixpath.basename(path)[: -len(".json")]
        try:
            runs[run_id] = json.loads(read_text(path))
        except (OSError, ValueError) as exc:
            logger.warning("unreadable manifest %s: %s", path, exc)
            runs.setdefault(run_id, None)
    return runs, published


def choose_run(runs: dict[str, dict | None], published: set[str], run_id: str | None = None) -> str:
    """`run_id` if the folder has it; else, of the runs with tables (if none has any: of all
    runs), the one that started last by its manifest (without one: by its id, which starts
    with the UTC start time)."""
    if not runs:
        raise ValueError(
            f"no vlbeam run found (no DIR/<table>/{partition_name('*')}/ partition, no DIR/{RUNS}/)"
        )
    if run_id is not None:
        if run_id not in runs:
            raise ValueError(f"no run {run_id!r}; runs here: {', '.join(sorted(runs))}")
        return run_id

    def started(rid: str) -> tuple[str, str]:
        manifest = runs[rid] or {}
        return (str(manifest.get("started_at") or rid), rid)

    return max(published or runs, key=started)


# ------------------------------------------------------------------ local folders (compaction)


def local_table_files(table_dir: Path) -> list[Path]:
    """A local table's Parquet files: its partitions' `*.parquet`, then any flat `*.parquet`
    (older layout), in partition then name order; hidden (`.`, `_`) files left out."""
    nested = sorted(table_dir.glob(f"{partition_name('*')}/*.parquet"))
    flat = sorted(table_dir.glob("*.parquet"))
    return [p for p in nested + flat if not p.name.startswith((".", "_"))]


def local_staged_runs(out: Path) -> list[str]:
    """The run ids with a staging folder in a local output folder."""
    staging = out / STAGING
    return sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []


def local_manifest(out: Path, run_id: str) -> Path:
    return out / RUNS / f"{run_id}.json"


def local_compaction_record(out: Path, compaction_id: str) -> Path:
    return out / COMPACTIONS / f"{compaction_id}.json"
