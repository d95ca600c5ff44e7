"""Run ids that every engine reads as strings.

A run id names its Hive partition folder, `<table>/run=<run_id>/`, and engines type a
partition column from the folder names: `run=20261201` is an integer to Spark, DuckDB and
pyarrow, `run=2026-12-01` a date to Spark and DuckDB, `run=epoch` or `run=infinity` a date to
DuckDB, `run=0x1A` an integer to DuckDB and pyarrow. Rather than rename every partition, vlbeam
refuses such ids up front, so `run` is a string column everywhere and equals `run_id`.
"""

from __future__ import annotations

import re

MAX_LENGTH = 100
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# what some engine reads as a number besides what Python's float() takes: Java-style
# suffixes (Spark), hex/binary/octal literals (DuckDB, pyarrow), thousands separators
_NUMBER = re.compile(
    r"[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?[dDfFlL]?|[+-]?0[xXbBoO][0-9a-fA-F_]+"
)
# dates and timestamps: year, year-month, date (ISO or compact), optionally with a time
_DATE = re.compile(r"[+-]?\d{4,}[-/.]\d{1,2}([-/.]\d{1,2})?([ T_].*)?|\d{8}(T\d{2,6}(\.\d+)?Z?)?")
# words engines turn into dates, numbers, booleans or nulls
_WORDS = {"epoch", "infinity", "inf", "nan", "today", "now", "yesterday", "tomorrow",
          "allballs", "true", "false", "null", "none"}  # fmt: skip


def run_id_problem(run_id: str) -> str | None:
    """Why `run_id` can't name a partition, or None when it can."""
    if not run_id:
        return "it is empty"
    if len(run_id) > MAX_LENGTH:
        return f"it is longer than {MAX_LENGTH} characters"
    if not _SAFE.fullmatch(run_id):
        return (
            "it may only hold letters, digits, '.', '_' and '-', and must start with a letter "
            "or digit (it names folders and files)"
        )
    if run_id.lower() in _WORDS:
        return "engines read this word as a date, number, boolean or null"
    try:
        float(run_id)
    except ValueError:
        pass
    else:
        return "it parses as a number"
    if _NUMBER.fullmatch(run_id):
        return "it parses as a number"
    if _DATE.fullmatch(run_id):
        return "it parses as a date or timestamp"
    return None


def check_run_id(run_id: str) -> str:
    """`run_id` itself, or ValueError with a message that says what to pass instead."""
    problem = run_id_problem(run_id)
    if problem:
        raise ValueError(
            f"--run-id {run_id!r} can't name the run partition (run={run_id}): {problem}. "
            "Spark, DuckDB and pyarrow type partition folders from their names, so `run` would "
            "stop being a string column. Use an id with a word in it, e.g. "
            "'nightly-20261201' or 'r20261201', or leave --run-id out "
            "(default: UTC start time + random suffix, e.g. 20261201T020000Z-4be1a7)."
        )
    return run_id
