"""--run-id: ids that some engine would type as a number or a date are refused up front; the
ids accepted (the default included) stay strings in pyarrow and DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.pipeline_helpers import SAMPLES_GLOB, fake_handler, run_job
from vlbeam.pipeline.cli import main
from vlbeam.schemas.ids import new_run_id
from vlbeam.schemas.run_ids import check_run_id, run_id_problem

REFUSED = {
    "20261201": "number",
    "2026": "number",
    "1.5": "number",
    "1e5": "number",
    "0x1A": "number",
    "0b101": "number",
    "1d": "number",
    "2026-12-01": "date",
    "2026-12": "date",
    "2026.12.01": "date",
    "20261201T083000Z": "date",
    "2026-12-01_08-30": "date",
    "epoch": "word",
    "infinity": "word",
    "inf": "word",
    "NaN": "word",
    "true": "word",
    "-5": "letters",
    "a/b": "letters",
    "run=x": "letters",
    "_hidden": "letters",
    ".hidden": "letters",
    "2026-12-01T08:30:00": "letters",
    "x" * 101: "longer",
}
ACCEPTED = ["nightly-20261201", "r20261201", "2026-12-01-nightly", "night1", "v1.2", "1.2.3",
            "12345abc", "20261122T083000Z-3fa2c1", new_run_id()]  # fmt: skip

# Folder names each engine re-types (checked below against the engines themselves).
RETYPED_BY_DUCKDB = ["20261201", "2026-12-01", "epoch", "infinity", "inf", "0x1A", "0b101"]
RETYPED_BY_PYARROW = ["20261201", "2026", "0x1A"]


@pytest.mark.parametrize("run_id", list(REFUSED))
def test_refused_ids_say_why(run_id: str) -> None:
    problem = run_id_problem(run_id)
    assert problem is not None
    assert REFUSED[run_id] in problem
    with pytest.raises(ValueError, match="Use an id with a word in it"):
        check_run_id(run_id)


# ids by position: new_run_id() differs per collection (pytest-xdist workers must agree)
@pytest.mark.parametrize("run_id", ACCEPTED, ids=[f"accepted{i}" for i in range(len(ACCEPTED))])
def test_accepted_ids(run_id: str) -> None:
    assert run_id_problem(run_id) is None
    assert check_run_id(run_id) == run_id


def _partitioned(root: Path, run_ids: list[str]) -> Path:
    for i, run_id in enumerate(run_ids):
        folder = root / f"t{i}" / f"run={run_id}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"x": [1]}), folder / "part-0.parquet")
    return root


def _duckdb_type(folder: Path) -> str:
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT typeof(run) FROM read_parquet('{folder}/run=*/*.parquet', "
            "hive_partitioning = true)"
        ).fetchone()[0]


def test_the_refused_forms_are_what_engines_retype(tmp_path: Path) -> None:
    """The rule is grounded: these folder names really change type in DuckDB / pyarrow, and
    every one of them is refused."""
    root = _partitioned(tmp_path / "duck", RETYPED_BY_DUCKDB)
    for i, run_id in enumerate(RETYPED_BY_DUCKDB):
        assert _duckdb_type(root / f"t{i}") != "VARCHAR", run_id
        assert run_id_problem(run_id), run_id
    root = _partitioned(tmp_path / "arrow", RETYPED_BY_PYARROW)
    for i, run_id in enumerate(RETYPED_BY_PYARROW):
        schema = ds.dataset(root / f"t{i}", partitioning="hive").schema
        assert schema.field("run").type != pa.string(), run_id
        assert run_id_problem(run_id), run_id


def test_accepted_ids_stay_strings_in_every_engine(tmp_path: Path) -> None:
    root = _partitioned(tmp_path, ACCEPTED)
    for i, run_id in enumerate(ACCEPTED):
        assert _duckdb_type(root / f"t{i}") == "VARCHAR", run_id
        schema = ds.dataset(root / f"t{i}", partitioning="hive").schema
        assert schema.field("run").type == pa.string(), run_id


def test_the_job_refuses_a_numeric_run_id_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run_job([SAMPLES_GLOB], out, "--run-id=20261201", handler=fake_handler())
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--run-id '20261201'" in err and "parses as a number" in err
    assert not out.exists()


def test_the_cli_refuses_a_date_run_id(tmp_path: Path, capsys) -> None:
    code = None
    try:
        code = main(["run", f"--input={SAMPLES_GLOB}", f"--output={tmp_path / 'o'}",
                     "--run-id=2026-12-01", "--model=tiny-random"])  # fmt: skip
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert "parses as a date" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
