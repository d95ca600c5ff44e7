"""Publishing when something goes wrong: a rename that fails part-way, two publishers at once,
a publisher killed at a random point, the same run id published again with fewer shards.

Every check reads the output the way vlbeam's readers do (`committed_view`: what `report`,
`compact`, `load duckdb` and `--skip-existing` read): it must always be exactly one run's
tables, every table from the same run, never empty, never a row twice.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlbeam.outputs import publish as publish_module
from vlbeam.outputs.attempt import AttemptRecord
from vlbeam.outputs.layout import (
    STAGING,
    attempt_of_file,
    committed_view,
    new_attempt_id,
    staging_dir,
)
from vlbeam.outputs.load_duckdb import load_duckdb
from vlbeam.outputs.publish import publish
from vlbeam.schemas import TABLES
from vlbeam.schemas.parquet import writer_options

SHARDS = 3  # files per staged table, as a run with three bundles writes
ROWS = 4  # rows per file


def _value(field: pa.Field, run_id: str, i: int):
    if field.name == "run_id":
        return run_id
    kind = field.type
    if pa.types.is_list(kind) or pa.types.is_map(kind):
        return []
    if pa.types.is_string(kind):
        return f"{run_id}-{field.name}-{i}"
    if pa.types.is_integer(kind):
        return i
    if pa.types.is_floating(kind):
        return float(i)
    if pa.types.is_boolean(kind):
        return True
    if pa.types.is_binary(kind):
        return f"{run_id}-{i}".encode()
    if pa.types.is_struct(kind):
        return {child.name: _value(child, run_id, i) for child in kind}
    raise AssertionError(f"no test value for {field}")


def rows(table: str, run_id: str, n: int, start: int = 0) -> pa.Table:
    schema = TABLES[table]
    return pa.Table.from_pylist(
        [{f.name: _value(f, run_id, i) for f in schema} for i in range(start, start + n)],
        schema=schema,
    )


def stage(out: Path, run_id: str, attempt: str, shards: int = SHARDS) -> None:
    """What a finished job leaves in its attempt's staging folder: every table, `shards`
    files of ROWS rows each, tagged with the run id."""
    for table in TABLES:
        folder = Path(staging_dir(str(out), run_id, attempt)) / table
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(shards):
            name = f"part-{k:05d}-of-{shards:05d}.parquet"
            pq.write_table(rows(table, run_id, ROWS, k * ROWS), folder / name, **writer_options())


def publish_run(out: Path, run_id: str, mode: str = "overwrite", shards: int = SHARDS) -> str:
    attempt = new_attempt_id()
    stage(out, run_id, attempt, shards)
    publish(str(out), run_id, TABLES, mode, attempt=attempt)
    return attempt


def read_committed(out: Path) -> dict[str, list[str]]:
    """Each table's `run_id` column as vlbeam's readers see it (a file dropped after the
    listing by a publish that just committed: read again)."""
    for _ in range(20):
        view = committed_view(str(out), TABLES)
        try:
            return {
                t: [r for f in view.files(t) for r in pq.read_table(f).column("run_id").to_pylist()]
                for t in TABLES
            }
        except FileNotFoundError:
            continue
    raise AssertionError("the output never stood still long enough to be read")


def one_run(seen: dict[str, list[str]], shards: int = SHARDS) -> str:
    """The run every table is from; fails on a mix, an empty table, a row seen twice."""
    runs = {r for values in seen.values() for r in values}
    assert len(runs) == 1, f"tables from several runs: { {t: set(v) for t, v in seen.items()} }"
    for table, values in seen.items():
        assert len(values) == shards * ROWS, f"{table}: {len(values)} rows, not {shards * ROWS}"
    return runs.pop()


# ----------------------------------------------------------------------------- partial publish


def test_a_rename_failing_on_the_second_table_leaves_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    publish_run(out, "r1")
    before = read_committed(out)
    counts = load_duckdb(str(out), str(tmp_path / "before.duckdb"))
    assert one_run(before) == "r1"

    real = publish_module.FileSystems.rename
    tables_moved = []

    def flaky(sources, targets):
        if targets and "/run=" in targets[0]:  # publish moving a table into its partition
            tables_moved.append(targets[0])
            if len(tables_moved) == 2:
                raise OSError("injected: the store refused the rename")
        return real(sources, targets)

    monkeypatch.setattr(publish_module.FileSystems, "rename", flaky)
    attempt = new_attempt_id()
    record = AttemptRecord(str(out), "r2", attempt).start()  # as `vlbeam run` does
    stage(out, "r2", attempt)
    with pytest.raises(OSError, match="injected"):
        publish(str(out), "r2", TABLES, "overwrite", attempt=attempt)
    monkeypatch.undo()
    record.finish("failed", "OSError: injected")

    assert read_committed(out) == before  # unchanged, every table, through vlbeam's readers
    assert load_duckdb(str(out), str(tmp_path / "after.duckdb")) == counts
    # the next attempt publishes whole, and nothing of the broken one survives
    publish_run(out, "r2")
    assert one_run(read_committed(out)) == "r2"
    leftovers = [p for p in out.rglob("*.parquet") if attempt_of_file(p.name) == attempt]
    assert leftovers == [] and not (out / STAGING).exists()


# ----------------------------------------------------------------------------- two at once


def _race(out: Path, runs: list[str], start) -> None:
    attempts = [new_attempt_id() for _ in runs]
    for run_id, attempt in zip(runs, attempts, strict=True):
        stage(out, run_id, attempt)
    start(
        [
            (lambda r=r, a=a: publish(str(out), r, TABLES, "overwrite", attempt=a))
            for r, a in zip(runs, attempts, strict=True)
        ]
    )


def _threads(jobs) -> None:
    barrier = threading.Barrier(len(jobs))
    errors = []

    def go(job):
        barrier.wait()
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _processes(jobs) -> None:
    ctx = multiprocessing.get_context("fork")
    event = ctx.Event()

    def go(job):
        event.wait()
        job()

    procs = [ctx.Process(target=go, args=(job,)) for job in jobs]
    for p in procs:
        p.start()
    event.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * len(procs)


@pytest.mark.parametrize("start", [_threads, _processes], ids=["threads", "processes"])
def test_two_publishers_at_once_end_with_one_runs_tables(tmp_path, start):
    out = tmp_path / "out"
    publish_run(out, "r0")
    observed: list[str] = []
    stop = threading.Event()

    def watch():  # a reader during every race: always one whole run
        while not stop.is_set():
            observed.append(one_run(read_committed(out)))

    reader = threading.Thread(target=watch)
    reader.start()
    try:
        for i in range(8):
            runs = [f"a{i}", f"b{i}"]
            _race(out, runs, start)
            assert one_run(read_committed(out)) in runs
            # plain files too, once the publishers are done: one run's, nothing else
            files = list(out.glob("*/run=*/*.parquet"))
            assert {p.parent.name for p in files} <= {f"run={r}" for r in runs}
            assert len({p.parent.name for p in files}) == 1
    finally:
        stop.set()
        reader.join()
    assert len(observed) > 0


# ----------------------------------------------------------------------------- kill -9


def _publish_in_child(out: str, run_id: str, attempt: str, ready) -> None:
    ready.send(True)
    publish(out, run_id, TABLES, "overwrite", attempt=attempt)
    ready.send(True)


def test_a_publisher_killed_at_any_point_leaves_the_old_run_or_the_new(tmp_path):
    out = tmp_path / "out"
    publish_run(out, "r0")
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(20)

    def launch(run_id: str):
        attempt = new_attempt_id()
        stage(out, run_id, attempt)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_publish_in_child, args=(str(out), run_id, attempt, child))
        proc.start()
        assert parent.poll(30) and parent.recv()
        return proc, parent

    proc, pipe = launch("timing")  # one whole publish in a child: the span kills are drawn from
    started = time.monotonic()
    assert pipe.poll(60) and pipe.recv()
    span = time.monotonic() - started
    proc.join()
    previous, outcomes = "timing", {"old": 0, "new": 0}
    for i in range(20):
        run_id = f"k{i}"
        proc, pipe = launch(run_id)
        time.sleep(rng.uniform(0, span))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        seen = one_run(read_committed(out))  # old or new, whole, never twice
        assert seen in (previous, run_id)
        outcomes["new" if seen == run_id else "old"] += 1
        previous = seen
    # and the publish after the last kill finds the lease of a dead holder and takes it
    publish_run(out, "final")
    assert one_run(read_committed(out)) == "final"
    assert not any(attempt_of_file(p.name) for p in out.glob("*/run=k*/*.parquet"))
    print(f"kills: {outcomes} (span {span:.3f} s)")


# ----------------------------------------------------------------------------- same id again


def test_the_same_run_id_appended_again_with_fewer_shards_leaves_no_stale_shard(tmp_path):
    out = tmp_path / "out"
    publish_run(out, "other", mode="append")
    publish_run(out, "nightly", mode="append", shards=3)
    first = read_committed(out)
    assert first["pages"].count("nightly") == 3 * ROWS
    publish_run(out, "nightly", mode="append", shards=1)
    seen = read_committed(out)
    for table, values in seen.items():
        assert values.count("nightly") == 1 * ROWS, table  # the second attempt's rows only
        assert values.count("other") == SHARDS * ROWS, table
        shards = list((out / table / "run=nightly").glob("*.parquet"))
        assert len(shards) == 1, shards  # plain readers see no stale shard either
