"""What a scheduler sees when `vlbeam run` ends: the exit code, and one line on stderr.

    0  the run committed; at most --max-failed-fraction of its work units failed
    1  the run failed: nothing was committed, readers see the previous output (the
       manifest `_runs/<run_id>.json` says `failed`; Python's traceback on stderr)
    2  a bad invocation, refused before any work (flags, model, key, an --output that can't
       be written): one line on stderr
    3  an engine stopped the run: its breaker opened (the run committed what it had; the
       remaining units are `EngineUnavailable` failure rows), or it rejected every request
       (`RunAborted`: nothing committed)
    4  --max-cost: refused at launch (nothing written), or the budget ran out mid-run (the run
       committed what it had; the units not sent are `BudgetExceeded` failure rows)
    5  the run committed, but more than --max-failed-fraction of its work units failed

A work unit is a page, a video window, or a file that failed before it was split; its share
that failed is failures / (failures + pages + video windows). Failures of single inputs are
data (the `failures` table): a few corrupt files should not page anyone. A run where a fifth of
the work failed did not do its job, whatever the cause (a bad key, a dead server, a partial
outage), and whatever runs after it should not consume its output unseen: hence the default
0.2. Counters are read here alone: an engine counts `engine_unavailable` (or fails units
with `EngineUnavailable`) for the run to exit 3 (`run()` raises `EngineUnavailable` after
publishing: `refuse_if_engine_unavailable`); `BudgetExceeded` rows give 4 (`run()` raises it
after publishing: `finish_budget`).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENGINE_UNAVAILABLE = 3
EXIT_BUDGET = 4
EXIT_TOO_MANY_FAILURES = 5

ENGINE_COUNTER = "engine_unavailable"  # an engine counts it when it stops serving
ENGINE_ERROR = "EngineUnavailable"  # failures.<stage>.<type> counters
BUDGET_ERROR = "BudgetExceeded"


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str | None = None  # the one stderr line, when code != 0
    failed_fraction: float = 0.0


def failed_fraction(values: dict[str, int]) -> float:
    failures = values.get("failures", 0)
    units = failures + values.get("pages_ok", 0) + values.get("video_windows_ok", 0)
    return failures / units if units else 0.0


def _failed_as(values: dict[str, int], error_type: str) -> int:
    suffix = f".{error_type}"
    return sum(
        n for name, n in values.items() if name.startswith("failures.") and name.endswith(suffix)
    )


def engine_stopped(values: dict[str, int]) -> int:
    """How many units an engine's breaker failed fast (its counter, else its failure rows)."""
    return int(values.get(ENGINE_COUNTER, 0) or 0) or _failed_as(values, ENGINE_ERROR)


def budget_stopped(values: dict[str, int]) -> int:
    """How many units --max-cost kept from being sent."""
    return _failed_as(values, BUDGET_ERROR)


def judge(values: dict[str, int], max_failed_fraction: float, run_id: str = "") -> Outcome:
    """The exit code of a committed run from its counters (see the module docstring)."""
    fraction = failed_fraction(values)
    label = f"vlbeam run {run_id}" if run_id else "vlbeam run"
    stopped = engine_stopped(values)
    if stopped:
        return Outcome(
            EXIT_ENGINE_UNAVAILABLE,
            f"{label}: the inference engine stopped serving ({stopped} units failed fast); "
            f"published what it had: {values.get('failures', 0)} failure rows",
            fraction,
        )
    refused = budget_stopped(values)
    if refused:
        return Outcome(
            EXIT_BUDGET,
            f"{label}: --max-cost was reached; {refused} units were not sent (published "
            "what it had)",
            fraction,
        )
    if fraction > max_failed_fraction:
        return Outcome(
            EXIT_TOO_MANY_FAILURES,
            f"{label}: {fraction:.0%} of the work units failed ({values.get('failures', 0)} "
            f"failure rows), above --max-failed-fraction {max_failed_fraction:g}; "
            "the output is published (see the failures table)",
            fraction,
        )
    return Outcome(EXIT_OK, None, fraction)
