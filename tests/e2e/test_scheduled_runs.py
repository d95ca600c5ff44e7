"""Scheduled runs: --skip-existing, runs side by side, run manifests, DuckDB loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.pipeline_helpers import (
    SAMPLES_GLOB,
    echo_inference,
    fake_handler,
    grounding_or_page_answers,
    read_table,
    run_job,
)
from tests.video_fixtures import constant_rate, write_video
from vlbeam.outputs.compact import compact
from vlbeam.outputs.load_duckdb import load_duckdb
from vlbeam.schemas import SCHEMA_VERSION
from vlbeam.schemas.elements import VLResult

SAMPLES = Path(SAMPLES_GLOB).parent


def logging_inference(log: Path):
    """A model double that appends one line per request to `log` (survives pickling)."""

    def infer(model, batch, cfg):
        with open(log, "a") as handle:
            handle.write("x\n" * len(batch))
        return echo_inference(model, batch, cfg)

    return infer


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def partitions(out: Path, table: str) -> list[str]:
    return sorted(p.name for p in (out / table).iterdir())


@pytest.mark.slow
def test_skip_existing_processes_only_new_or_failed_files(tmp_path):
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "calls.log"
    src.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", src / "a.pdf")
    shutil.copy(SAMPLES / "scanned_page.pdf", src / "b.pdf")
    flaky = fake_handler(
        lambda m, batch, c: [
            VLResult.failed(RuntimeError("flaky model"))
            if len(r.images[0]) > 100_000  # the scanned page's PNG is large
            else res
            for r, res in zip(batch, echo_inference(m, batch, c), strict=True)
        ]
    )
    run_job([f"{src}/*"], out, "--skip-existing", "--run-id=night1", handler=flaky)
    first = {Path(d["source_uri"]).name: d["status"] for d in read_table(out, "documents")}
    assert first == {"a.pdf": "ok", "b.pdf": "failed"}

    # Night 2: same files, a healthy model. a.pdf is skipped; b.pdf (failed) is retried.
    run_job([f"{src}/*"], out, "--skip-existing", "--run-id=night2",
            handler=fake_handler(logging_inference(log)))  # fmt: skip
    assert calls(log) == 1
    # Night 3: nothing new: no inference at all. Night 4: a new file: only that one.
    run_job([f"{src}/*"], out, "--skip-existing", "--run-id=night3",
            handler=fake_handler(logging_inference(log)))  # fmt: skip
    assert calls(log) == 1
    shutil.copy(SAMPLES / "born_digital.pdf", src / "c.pdf")  # same content as a.pdf
    (src / "d.pdf").write_bytes((SAMPLES / "born_digital.pdf").read_bytes() + b"\n% changed\n")
    run_job([f"{src}/*"], out, "--skip-existing", "--run-id=night4",
            handler=fake_handler(logging_inference(log)))  # fmt: skip
    assert calls(log) == 2  # d.pdf is new content; c.pdf has a.pdf's content, done already

    # Runs sit side by side as run=<run_id> partitions; every run accounts for every file.
    assert partitions(out, "documents") == [f"run=night{i}" for i in (1, 2, 3, 4)]
    docs = read_table(out, "documents")
    night = {r: {Path(d["source_uri"]).name: d["status"] for d in docs if d["run_id"] == r}
             for r in ("night2", "night3", "night4")}  # fmt: skip
    assert night["night2"] == {"a.pdf": "skipped", "b.pdf": "ok"}
    assert night["night3"] == {"a.pdf": "skipped", "b.pdf": "skipped"}
    assert night["night4"] == {"a.pdf": "skipped", "b.pdf": "skipped", "c.pdf": "skipped",
                               "d.pdf": "ok"}  # fmt: skip


def test_skip_existing_reprocesses_with_another_prompt(tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_job([SAMPLES_GLOB], out, "--skip-existing", handler=fake_handler())
    prompt = tmp_path / "p.txt"
    prompt.write_text("Transcribe.")
    run_job([SAMPLES_GLOB], out, "--skip-existing", f"--ocr-prompt-file={prompt}",
            handler=fake_handler(logging_inference(log)))  # fmt: skip
    assert calls(log) == 2


def test_overwrite_mode_keeps_only_the_latest_run(tmp_path):
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, "--run-id=r1", handler=fake_handler())
    run_job([SAMPLES_GLOB], out, "--run-id=r2", handler=fake_handler())
    for table in ("documents", "pages", "failures", "video_windows", "video_events"):
        assert partitions(out, table) == ["run=r2"], table


def test_run_manifest_records_options_versions_counts_without_secrets(tmp_path, monkeypatch):
    shutil.copytree(SAMPLES, tmp_path / "in")
    monkeypatch.chdir(tmp_path)  # relative --input and --output, as typed
    secrets = {
        "--pdf-password": "hunter2-secret",
        "--s3_secret_access_key": "s3-secret-value",
        "--s3_access_key_id": "AKIA-key-id-value",
        "--azure_connection_string": "AccountName=a;AccountKey=azure-key-value",
    }
    flags = [f"{flag}={value}" for flag, value in secrets.items()]
    run_job(["in/*.pdf"], Path("out"), "--run-id=m1", *flags, handler=fake_handler())
    text = (tmp_path / "out" / "_runs" / "m1.json").read_text()
    manifest = json.loads(text)
    assert manifest["status"] == "succeeded" and manifest["run_id"] == "m1"
    assert manifest["counts"]["pages_ok"] == 2 and manifest["counts"]["documents"] == 2
    assert manifest["versions"]["apache-beam"] and manifest["versions"]["vlbeam"]
    assert manifest["inputs"] == [str(tmp_path / "in" / "*.pdf")]
    assert manifest["output"] == str(tmp_path / "out")
    for flag, value in secrets.items():
        assert manifest["options"][flag.lstrip("-").replace("-", "_")] == "***"
        assert value not in text
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["started_at"] <= manifest["finished_at"]


def test_failed_run_leaves_previous_output_and_a_failed_manifest(tmp_path):
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, "--run-id=good", handler=fake_handler())

    class Unloadable(type(fake_handler())):
        def load_model(self):
            raise RuntimeError("GPU fell off the bus")

    broken = Unloadable(fake_handler()._cfg, loader=lambda c: None)
    with pytest.raises(Exception, match="GPU fell off the bus"):
        run_job([SAMPLES_GLOB], out, "--run-id=bad", handler=broken)
    assert partitions(out, "pages") == ["run=good"]
    assert len(read_table(out, "pages")) == 2
    failed = json.loads((out / "_runs" / "bad.json").read_text())
    assert failed["status"] == "failed" and "GPU fell off the bus" in failed["error"]


def test_duckdb_round_trip(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", src / "a.pdf")
    write_video(src / "clip.mp4", constant_rate(6, 10), None)

    run_job(
        [f"{src}/*"], out, "--query=a door opens", handler=fake_handler(grounding_or_page_answers)
    )
    db = tmp_path / "w.duckdb"
    counts = load_duckdb(str(out), str(db))
    assert counts["documents"] == 2 and counts["pages"] == 1 and counts["video_events"] == 1
    load_duckdb(str(out), str(db))  # idempotent: replaces, never duplicates
    with duckdb.connect(str(db)) as con:
        joined = con.execute(
            "SELECT d.kind, d.status, p.page_number, p.text FROM pages p "
            "JOIN documents d USING (doc_id)"
        ).fetchall()
        assert joined == [("pdf", "ok", 1, "# Page")]
        events = con.execute(
            "SELECT d.source_uri, count(*), min(e.start_s), max(e.end_s) FROM video_events e "
            "JOIN documents d USING (doc_id) GROUP BY ALL"
        ).fetchall()
        assert [(Path(u).name, n, a, b) for u, n, a, b in events] == [("clip.mp4", 1, 1.0, 2.5)]
        types = dict(con.execute("SELECT column_name, data_type FROM "
                                 "information_schema.columns WHERE table_name = 'video_windows'"
                                 ).fetchall())  # fmt: skip
        assert types["frame_times_s"] == "DOUBLE[]" and types["window_index"] == "INTEGER"
        assert types["cost_usd"] == "DOUBLE" and "run" not in types


def test_lists_are_written_as_compliant_parquet_lists(tmp_path):
    """BigQuery and Spark read LIST columns without casts only in the spec's 3-level form."""
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    write_video(tmp_path / "v.mp4", constant_rate(3, 10), None)
    run_job([str(tmp_path / "v.mp4")], out, "--query=x",
            handler=fake_handler(lambda m, b, c: [VLResult(text="[]")] * len(b)))  # fmt: skip
    [path] = (out / "video_windows").glob("run=*/*.parquet")
    schema = str(pq.ParquetFile(path).schema)
    assert "repeated group field_id=-1 list" in schema
    assert " element;" in schema and " item;" not in schema


def test_compacting_nightly_runs_keeps_every_row_and_skip_existing(tmp_path):
    """Three nightly append runs, compacted: the same rows, DuckDB loads the same counts, and
    the next night's --skip-existing still knows what was done."""
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "calls.log"
    src.mkdir()
    for night, name in enumerate(["born_digital.pdf", "scanned_page.pdf", None], start=1):
        if name:
            shutil.copy(SAMPLES / name, src / name)
        run_job([f"{src}/*"], out, "--skip-existing", f"--run-id=night{night}",
                handler=fake_handler())  # fmt: skip
    tables = ("documents", "pages", "failures", "video_windows", "video_events")

    def rows(table):  # as readers see them, less the partition (where a row is stored)
        return sorted(
            repr({k: v for k, v in r.items() if k != "run"}) for r in read_table(out, table)
        )

    before = {t: rows(t) for t in tables}
    counts = load_duckdb(str(out), str(tmp_path / "before.duckdb"))
    assert len(list((out / "documents").iterdir())) == 3

    results = compact(str(out))

    assert results["documents"].files_before == 3 and results["documents"].files_after == 1
    for t in tables:
        assert rows(t) == before[t], t
        assert len(list((out / t).glob("run=*/*.parquet"))) == 1, t
    assert load_duckdb(str(out), str(tmp_path / "after.duckdb")) == counts
    run_job([f"{src}/*"], out, "--skip-existing", "--run-id=night4",
            handler=fake_handler(logging_inference(log)))  # fmt: skip
    assert calls(log) == 0  # both files were done before the compaction
    assert partitions(out, "documents")[-1] == "run=night4"


def test_the_same_run_id_published_again_with_fewer_shards_leaves_no_stale_shard(tmp_path):
    """A run id published a second time in append mode (a retried nightly job) replaces that
    run's rows, whatever files its first publish left: readers see the second publish's rows
    once (that other runs' partitions stay: test_append_mode_keeps_earlier_runs_side_by_side)."""
    src = tmp_path / "in"
    shutil.copytree(Path(SAMPLES_GLOB).parent, src, ignore=shutil.ignore_patterns("*.md"))
    out = tmp_path / "out"
    flags = ("--output-mode=append", "--target-long-side=256")
    run_job([f"{src}/*.pdf"], out, *flags, "--run-id=n1", handler=fake_handler())
    record_path = out / "_runs" / "n1.json"
    record = json.loads(record_path.read_text())
    for table in ("pages", "documents"):  # as a first publish from two bundles leaves it
        [single] = (out / table / "run=n1").glob("*.parquet")
        rows = pq.read_table(single)
        assert rows.num_rows == 2
        single.unlink()
        attempt = single.name.split("--")[0]
        names = [f"{attempt}--part-0000{i}-of-00002.parquet" for i in range(2)]
        for i, name in enumerate(names):
            pq.write_table(rows.slice(i, 1), single.with_name(name))
        record["commit"]["files"][table] = names  # and its commit lists both
    record_path.write_text(json.dumps(record))

    def seen(table: str) -> list[tuple[str, str]]:
        return sorted((r["run_id"], Path(r["source_uri"]).name) for r in read_table(out, table))

    both = ["born_digital.pdf", "scanned_page.pdf"]
    assert seen("pages") == [("n1", n) for n in both]
    (src / "born_digital.pdf").unlink()  # the retry has less to do: one shard per table
    run_job([f"{src}/*.pdf"], out, *flags, "--run-id=n1", handler=fake_handler())
    for table in ("pages", "documents"):
        assert seen(table) == [("n1", "scanned_page.pdf")], table
