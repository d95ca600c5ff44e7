"""Exactly once, end to end through `vlbeam run` (the CLI, against a local OpenAI-compatible
server on 127.0.0.1): a run id reused after a crash's leftovers, a failed run's clean-up and
records, an --output that can't be written, the exit codes a scheduler sees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fake_api_server import FakeApiServer, server_error
from tests.pipeline_helpers import inked_page
from vlbeam.outputs.attempt import attempt_over
from vlbeam.outputs.layout import ATTEMPTS, RUNS, STAGING, committed_view, new_attempt_id
from vlbeam.outputs.load_duckdb import load_duckdb
from vlbeam.pipeline.cli import main
from vlbeam.pipeline.outcome import (
    EXIT_BUDGET,
    EXIT_ENGINE_UNAVAILABLE,
    EXIT_OK,
    EXIT_TOO_MANY_FAILURES,
    judge,
)
from vlbeam.schemas import PAGES, TABLES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


def pdf(path: Path, pages: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [inked_page((80, 100), label=f"page {n}") for n in range(1, pages + 1)]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def vlbeam_run(server: FakeApiServer, *argv: str) -> int:
    return main(["run", "--backend=openai", "--provider=openai", "--api-model=m",
                 f"--base-url={server.base_url}", "--api-key-env=", "--no-preflight",
                 "--target-long-side=128", *argv])  # fmt: skip


def committed_rows(out: Path, table: str) -> list[dict]:
    return [r for f in committed_view(str(out), TABLES).files(table)
            for r in pq.read_table(f).to_pylist()]  # fmt: skip


def test_a_reused_run_id_never_publishes_a_crashed_runs_leftovers(server, tmp_path):
    """Finding 1 of issue 20: a 7-page PDF, run with --run-id nightly-a; then files like those
    a killed run leaves in its staging folder; then the same command again: 7 rows, not 14."""
    seven, out = pdf(tmp_path / "in" / "seven.pdf", 7), tmp_path / "out"
    argv = (f"--input={seven}", f"--output={out}", "--run-id=nightly-a")
    assert vlbeam_run(server, *argv) == EXIT_OK
    first = committed_rows(out, "pages")
    assert len(first) == 7
    # what a run killed after its job wrote its tables leaves behind: Beam's shards, in the
    # folder layout of a vlbeam from before attempts and in today's
    table = pa.Table.from_pylist(first, schema=PAGES)
    for folder in (out / STAGING / "nightly-a" / "pages",
                   out / STAGING / "nightly-a" / new_attempt_id() / "pages"):  # fmt: skip
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-00000-of-00002.parquet")
        pq.write_table(table, folder / "part-00001-of-00002.parquet")

    assert vlbeam_run(server, *argv) == EXIT_OK

    pages = committed_rows(out, "pages")
    assert len(pages) == 7 and sorted(p["page_number"] for p in pages) == list(range(1, 8))
    assert load_duckdb(str(out), str(tmp_path / "w.duckdb"))["pages"] == 7
    assert len(pq.read_table(out / "pages").to_pylist()) == 7  # a plain reader too
    assert len(list((out / "documents").glob("run=*/*.parquet"))) == 1


def test_a_failed_run_cleans_its_staging_and_records_how_it_ended(server, tmp_path):
    seven, out = pdf(tmp_path / "in" / "seven.pdf", 2), tmp_path / "out"
    assert vlbeam_run(server, f"--input={seven}", f"--output={out}", "--run-id=good") == 0

    from tests.pipeline_helpers import fake_handler, run_job

    class Unloadable(type(fake_handler())):
        def load_model(self):
            raise RuntimeError("GPU fell off the bus")

    broken = Unloadable(fake_handler()._cfg, loader=lambda c: None)
    with pytest.raises(Exception, match="GPU fell off the bus"):
        run_job([str(seven)], out, "--run-id=bad", handler=broken)
    assert not (out / STAGING).exists()  # nothing left behind
    [record] = (out / ATTEMPTS / "bad").glob("*.json")
    ended = json.loads(record.read_text())
    assert ended["status"] == "failed" and "GPU fell off the bus" in ended["error"]
    assert ended["started_at"] <= ended["finished_at"] and attempt_over(ended)
    [good] = (out / ATTEMPTS / "good").glob("*.json")
    assert json.loads(good.read_text())["status"] == "committed"
    # the same run id failing again never hides its committed output
    with pytest.raises(Exception, match="GPU fell off the bus"):
        run_job([str(seven)], out, "--run-id=good", handler=broken)
    assert json.loads((out / RUNS / "good.json").read_text())["status"] == "succeeded"
    assert len(committed_rows(out, "pages")) == 2


def test_a_running_record_says_a_dead_run_died(tmp_path):
    from vlbeam.outputs.attempt import AttemptRecord

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    record = AttemptRecord(str(tmp_path), "r1", new_attempt_id()).start({"pages": 89})
    record.plan({"documents": 1})
    alive = json.loads(Path(record.path).read_text())
    assert alive["status"] == "running" and alive["planned"] == {"pages": 89, "documents": 1}
    assert not attempt_over(alive)
    assert attempt_over({**alive, "pid": int(dead.stdout)})  # its process is gone
    assert attempt_over({**alive, "alive_at_s": alive["alive_at_s"] - 3600})  # no heartbeat
    record.finish("committed")


@pytest.mark.parametrize(
    "output",
    ["{tmp}/a-file/out", "/proc/vlbeam-out"],
    ids=["under-a-file", "read-only"],
)
def test_an_output_that_cant_be_written_stops_the_run_before_any_work(output, tmp_path, server):
    (tmp_path / "a-file").write_text("not a folder")
    seven = pdf(tmp_path / "in" / "one.pdf", 1)
    target = output.format(tmp=tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "vlbeam.pipeline.cli", "run", f"--input={seven}",
         f"--output={target}", "--backend=openai", "--provider=openai", "--api-model=m",
         f"--base-url={server.base_url}", "--api-key-env="],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line; no traceback, no apitools
    assert proc.stderr.startswith(f"vlbeam: --output {target} can't be written")
    assert server.requests == []  # not even the API check ran


def test_no_apitools_warning_on_any_command(tmp_path):
    for command in (["run", "--help"], ["compact", str(tmp_path)]):  # Beam imported, or not
        proc = subprocess.run([sys.executable, "-m", "vlbeam.pipeline.cli", *command],
                              capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
        assert "apitools" not in proc.stderr + proc.stdout
        assert proc.returncode == 0
    beam = subprocess.run([sys.executable, "-c", "import apache_beam.io.gcp.bigquery"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert "apitools not found" in beam.stderr  # what the filter keeps out is still there


def test_exit_codes_a_scheduler_sees(server, tmp_path, capsys):
    ten, out = pdf(tmp_path / "in" / "ten.pdf", 10), tmp_path / "out"
    server.always(server_error(500, "down"))
    code = vlbeam_run(server, f"--input={ten}", f"--output={out}", "--max-attempts=1")
    err = capsys.readouterr().err
    assert code == EXIT_TOO_MANY_FAILURES
    assert err.count("\n") == 1 and "100% of the work units failed" in err
    assert len(committed_rows(out, "failures")) == 10  # published all the same
    code = vlbeam_run(server, f"--input={ten}", f"--output={out}", "--max-attempts=1",
                      "--max-failed-fraction=1")  # fmt: skip
    assert code == EXIT_OK and capsys.readouterr().err == ""
    assert main(["run", f"--input={ten}", f"--output={out}", "--max-failed-fraction=2"]) == 2


def test_the_outcome_reads_the_engine_hooks():
    ok = {"pages_ok": 99, "failures": 1}
    assert judge(ok, 0.2).code == EXIT_OK
    assert judge(ok, 0.0).code == EXIT_TOO_MANY_FAILURES
    assert judge({**ok, "engine_unavailable": 1}, 1.0).code == EXIT_ENGINE_UNAVAILABLE
    stopped = {**ok, "failures.inference.BudgetExceeded": 1}
    outcome = judge(stopped, 1.0, "r1")
    assert outcome.code == EXIT_BUDGET == 4 and outcome.message.startswith("vlbeam run r1")
    engine = judge({"failures.inference.EngineUnavailable": 3, "failures": 3}, 1.0)
    assert engine.code == EXIT_ENGINE_UNAVAILABLE == 3  # the code main's engine work uses
