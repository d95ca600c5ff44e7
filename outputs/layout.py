"""The output dataset on disk: every path vlbeam reads or writes under `--output DIR`.

    DIR/<table>/run=<run_id>/<attempt>--part-*.parquet   every table, one Hive partition per run
    DIR/_runs/<run_id>.json                      the run manifest; `status: succeeded` is the
                                                 run's commit record (it lists its files)
    DIR/_attempts/<run_id>/<attempt>.json        the `running` record of one attempt of a run
    DIR/_staging/<run_id>/<attempt>/<table>/     while an attempt runs (never read)
    DIR/_lease/<generation>.json                 the publish lease (outputs/lease.py)
    DIR/_compactions/<id>.json                   what `vlbeam compact` did
    DIR/_compact/<id>/, DIR/_compact.lock        while `vlbeam compact` works

This module is the only one that spells these names: publishing, the manifest, compaction,
the DuckDB loader and the report all ask it (tests/test_layers.py checks), and the only one
that says which files are committed (`committed_view`): every vlbeam reader goes through it.
Paths work on any Beam filesystem (local, gs://, s3://) except where a function says it is
local.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

STAGING = "_staging"
RUNS = "_runs"
ATTEMPTS = "_attempts"
LEASE = "_lease"
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


def new_attempt_id(now: datetime | None = None) -> str:
    """One attempt of a run (a run id may be run again): `try-20261201T020000Z-1a2b3c4d`."""
    now = now or datetime.now(UTC)
    return f"try-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


_ATTEMPT_FILE = re.compile(r"(try-\d{8}T\d{6}Z-[0-9a-f]{8})--")


def attempt_file_name(attempt: str, name: str) -> str:
    """A published file's name: the attempt that wrote it, then Beam's shard name."""
    return f"{attempt}--{name}"


def attempt_of_file(name: str) -> str | None:
    """The attempt a published file's name says wrote it; None for a file from before."""
    found = _ATTEMPT_FILE.match(posixpath.basename(name))
    return found.group(1) if found else None


def staging_dir(output: str, run_id: str, attempt: str | None = None) -> str:
    """A run's staging folder; with `attempt`, that attempt's own (nothing another attempt
    left is ever published)."""
    base = join(output, STAGING, run_id)
    return join(base, attempt) if attempt else base


def latest_staged_attempt(output: str, run_id: str) -> str | None:
    """The newest attempt (ids sort by their UTC start) with files staged for `run_id`."""
    base = staging_dir(output, run_id)
    found = {attempt_of_file(f"{p[len(base):].lstrip('/').split('/', 1)[0]}--")
             for p in files(base, "**")}  # fmt: skip
    return max((a for a in found if a), default=None)


def staging_root(output: str) -> str:
    return join(output, STAGING)


def attempt_record(output: str, run_id: str, attempt: str) -> str:
    return join(output, ATTEMPTS, run_id, f"{attempt}.json")


def attempts_dir(output: str) -> str:
    return join(output, ATTEMPTS)


def lease_dir(output: str) -> str:
    return join(output, LEASE)


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


def compactions_dir(output: str) -> str:
    return join(output, COMPACTIONS)


COMPACTED = "compacted-"  # a compaction's partition: run=compacted-<id>


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


@dataclass(frozen=True)
class Committed:
    """One committed partition: a run's (its manifest says `succeeded`) or a compaction's."""

    partition: str  # the run id, or compacted-<id>
    seq: int  # commit order: the publish lease generation it committed under (0: before leases)
    mode: str  # "overwrite" hides every partition committed before it
    files: dict[str, tuple[str, ...]] | None  # per table, the file names it committed;
    # None: every file there that no attempt marked (outputs written before commit records)


@dataclass(frozen=True)
class CommittedView:
    """What vlbeam's readers see of an output folder: the committed partitions that no later
    overwrite hid, each with exactly the files its commit record lists. Files a dead or
    running attempt put in place, and partitions an overwrite superseded (until publish drops
    them), are in no reader's view."""

    output: str
    visible: dict[str, Committed]
    superseded: dict[str, Committed]
    manifests: dict[str, dict | None]  # every run's manifest (failed runs too)
    present: dict[str, dict[str, list[str]]]  # table -> partition -> file paths found

    def files(self, table: str) -> list[str]:
        """The committed files of `table`, in commit then name order."""
        found: list[str] = []
        for entry in sorted(self.visible.values(), key=lambda e: (e.seq, e.partition)):
            found += self.partition_files(table, entry.partition)
        return found

    def partition_files(self, table: str, partition: str) -> list[str]:
        entry = self.visible.get(partition)
        if entry is None:
            return []
        paths = self.present.get(table, {}).get(partition, [])
        if entry.files is None:
            return sorted(p for p in paths if attempt_of_file(p) is None)
        wanted = set(entry.files.get(table, ()))
        return sorted(p for p in paths if posixpath.basename(p) in wanted)

    def complete(self, tables) -> bool:
        """Whether every file the visible commits list was found (see `committed_view`)."""
        compacted = max((e.seq for e in self.visible.values()
                         if e.partition.startswith(COMPACTED)), default=-1)  # fmt: skip
        for entry in self.visible.values():
            if entry.files is None or entry.seq < compacted:
                continue
            for table in tables:
                found = {posixpath.basename(p)
                         for p in self.present.get(table, {}).get(entry.partition, [])}  # fmt: skip
                if not set(entry.files.get(table, ())) <= found:
                    return False
        return True

    def garbage(self, table: str, keep: set[str] = frozenset()) -> list[str]:
        """Files of `table` in no commit record: what dead attempts moved in place and
        superseded partitions (`keep`: partitions not to touch, e.g. the publisher's own)."""
        committed = set(self.files(table))
        return sorted(
            p
            for partition, paths in self.present.get(table, {}).items()
            if partition not in keep
            for p in paths
            if p not in committed
        )


def _commit_of(partition: str, manifest: dict) -> Committed:
    commit = manifest.get("commit") or {}
    files = commit.get("files")
    return Committed(
        partition,
        int(commit.get("seq", 0)),
        str(commit.get("mode", "append")),
        {t: tuple(names) for t, names in files.items()} if isinstance(files, dict) else None,
    )


def read_json(path: str) -> dict | None:
    try:
        value = json.loads(read_text(path))
    except (OSError, ValueError) as exc:
        logger.warning("unreadable record %s: %s", path, exc)
        return None
    return value if isinstance(value, dict) else None


VIEW_TRIES = 50


def committed_view(output: str, tables) -> CommittedView:
    """Which partitions of `output` are committed and visible (see `CommittedView`).

    A run is committed when its manifest says `succeeded` (publish writes it last, in one
    piece); it lists its files and its place in the commit order (`seq`). A compaction is
    committed by its record. A partition with neither (written by hand or by a vlbeam from
    before run manifests) counts as committed at seq 0. The last overwrite commit hides every
    partition before it.

    The records and the file listing are read one after the other, and a publish may commit
    and drop the replaced files in between: a view in which a visible commit's files are
    missing is read again (a file a compaction merged is not missing)."""
    tables = list(tables)
    for attempt in range(VIEW_TRIES):
        view = _view_once(output, tables)
        if view.complete(tables):
            return view
        time.sleep(min(0.01 * (attempt + 1), 0.5))
    logger.warning("%s kept changing while it was read; some committed files are missing", output)
    return view


def _view_once(output: str, tables: list[str]) -> CommittedView:
    present: dict[str, dict[str, list[str]]] = {}
    for table in tables:
        for path in match(table_glob(output, table)):
            run_id = run_of_partition(path.rsplit("/", 2)[-2])
            if run_id is not None:
                present.setdefault(table, {}).setdefault(run_id, []).append(path)
    manifests: dict[str, dict | None] = {}
    for path in match(join(runs_dir(output), "*.json")):
        manifests[posixpath.basename(path)[: -len(".json")]] = read_json(path)
    entries: dict[str, Committed] = {}
    for run_id, manifest in manifests.items():
        if manifest and manifest.get("status") == "succeeded":
            entries[run_id] = _commit_of(run_id, manifest)
    for path in match(join(compactions_dir(output), "*.json")):
        record = read_json(path) or {}
        cid = posixpath.basename(path)[: -len(".json")]
        entries[COMPACTED + cid] = Committed(COMPACTED + cid, int(record.get("seq", 0)),
                                             "append", None)  # fmt: skip
    for partitions_of_table in present.values():
        for partition in partitions_of_table:
            if partition not in entries and partition not in manifests:
                entries[partition] = Committed(partition, 0, "append", None)
    cut = max((e.seq for e in entries.values() if e.mode == "overwrite"), default=0)
    visible = {k: e for k, e in entries.items() if e.seq >= cut}
    superseded = {k: e for k, e in entries.items() if e.seq < cut}
    return CommittedView(output, visible, superseded, manifests, present)


def list_runs(output: str, tables) -> tuple[dict[str, dict | None], set[str]]:
    """Every run of an output folder (a committed partition or a manifest) with its manifest,
    and the runs whose committed tables readers see (a failed run has a manifest only)."""
    view = committed_view(output, tables)
    runs: dict[str, dict | None] = dict(view.manifests)
    published: set[str] = set()
    for partition in view.visible:
        if any(view.partition_files(t, partition) for t in tables):
            runs.setdefault(partition, None)
            published.add(partition)
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


def local_compaction_record(out: Path, compaction_id: str) -> Path:
    return out / COMPACTIONS / f"{compaction_id}.json"
