"""The run's ledger: counters shared by threads and processes, and the budget over it."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from vlbeam.pipeline.progress_display import progress_figures, progress_line
from vlbeam.transforms.estimate import Prices
from vlbeam.transforms.run_ledger import RunAccount, RunLedger


def _add_many(path: str, n: int) -> None:
    ledger = RunLedger(path)
    for _ in range(n):
        ledger.add(units_done=1, input_tokens=7, spend_nano_usd=3)


def test_processes_and_threads_add_up_exactly(tmp_path):
    ledger = RunLedger(str(tmp_path / "staging" / "_ledger")).create()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(ledger.path, 200)) for _ in range(3)]
    threads = [threading.Thread(target=_add_many, args=(ledger.path, 200)) for _ in range(3)]
    for worker in (*procs, *threads):
        worker.start()
    for worker in (*procs, *threads):
        worker.join(60)
    values = ledger.read()
    assert values["units_done"] == 1200
    assert values["input_tokens"] == 8400 and values["spend_nano_usd"] == 3600
    with pytest.raises(KeyError):
        ledger.add(no_such_counter=1)


def test_the_budget_is_spent_from_tokens_and_prices(tmp_path):
    ledger = RunLedger(str(tmp_path / "_ledger")).create()
    account = RunAccount(ledger, Prices(1.0, 2.0), max_cost_usd=0.003)
    assert account.spend(1000, 0) == 1_000_000  # $0.001 in nano-dollars
    assert not account.exhausted()
    account.spend(500, 500)  # $0.0005 + $0.001
    assert not account.exhausted()
    account.spend(0, 250)  # $0.0005: now exactly at the budget
    assert account.exhausted()
    assert "reached --max-cost $0.003" in account.refusal()
    assert ledger.read()["requests"] == 3
    assert not RunAccount(ledger, Prices(1.0, 2.0)).exhausted()  # no budget: never


def test_a_budget_needs_prices():
    with pytest.raises(ValueError, match="--price-input-per-mtok"):
        RunAccount(max_cost_usd=1.0)


def test_progress_figures_and_eta():
    values = {"units_planned": 100, "units_done": 25, "units_failed": 2, "pages_done": 20,
              "spend_nano_usd": 1_500_000_000}  # fmt: skip
    fig = progress_figures(values, elapsed_s=10.0)
    assert fig["pages_per_s"] == 2.0 and fig["eta_s"] == 30.0 and fig["spend_usd"] == 1.5
    line = progress_line(fig)
    assert "25/100 units done (2 failed)" in line and "ETA 0m30s" in line
    assert progress_figures({}, 0.0)["eta_s"] is None
