"""The run's side of `--max-cost` and progress: the plan checked at launch, the ledger every
worker process counts into, the progress display, and the one message when the budget
stopped the run.

Which runners share a budget: the in-process runner (`FnApiRunner`, one process or
`--direct_num_workers N` processes: `--target local --workers N`) runs every worker on this
machine, so they count into one ledger file (`transforms/run_ledger.py`) under the run's
staging folder (a local temporary folder when `--output` is an object store) and stop
together. Distributed runners (Dataflow, Flink, a portable job service) have no file every
worker can lock, Beam metrics can't be read by workers while the job runs, and an object
store offers no atomic increment through Beam's `FileSystems`: there `--max-cost` is checked
at launch against the plan only, the run warns that it won't stop mid-run, and the spend is
a Beam counter (`spend_nano_usd`) in the runner's UI (README: "Budget and progress").
"""

from __future__ import annotations

import logging
import os
import tempfile

from vlbeam.outputs.layout import join, staging_dir
from vlbeam.pipeline.options import VlbeamOptions, run_control
from vlbeam.pipeline.plan import build_plan, plan_prices, token_counter
from vlbeam.pipeline.progress_display import ProgressDisplay
from vlbeam.schemas.errors import BudgetExceeded
from vlbeam.transforms.estimate import Plan
from vlbeam.transforms.run_ledger import RunAccount, RunLedger

logger = logging.getLogger(__name__)

LOCAL_RUNNERS = frozenset({"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner",
                           "SwitchingDirectRunner"})  # fmt: skip
LEDGER_FILE = "_ledger"


def is_local_runner(runner) -> bool:
    """Whether every worker of `runner` runs on this machine (None: a test pipeline's)."""
    if runner is None:
        return True
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.split(".")[-1] in LOCAL_RUNNERS


def check_budget_at_launch(opts: VlbeamOptions) -> Plan | None:
    """With `--max-cost`: make the plan and refuse (BudgetExceeded, with the figures) when
    its upper bound exceeds the budget. None without `--max-cost`."""
    control = run_control(opts)
    if control.max_cost is None:
        return None
    prices = plan_prices(opts)
    RunAccount(prices=prices, max_cost_usd=control.max_cost)  # needs prices: fails here
    plan = build_plan(opts, prices)
    totals = plan.totals()
    figures = (
        f"{totals['model_calls']:,} model calls, {totals['input_tokens']:,} input tokens "
        f"({totals['max_input_tokens']:,} with retries), up to "
        f"{totals['max_output_tokens']:,} output tokens: up to ${totals['cost_usd']:.4f}"
    )
    if totals["cost_usd"] > control.max_cost:
        raise BudgetExceeded(
            f"refusing to start: the plan's upper bound exceeds --max-cost "
            f"${control.max_cost:g} ({figures}; `vlbeam plan` shows the table). Raise "
            "--max-cost, or lower --max-new-tokens"
        )
    logger.info("plan within --max-cost $%g: %s", control.max_cost, figures)
    return plan


def account_for(
    opts: VlbeamOptions, runner, run_id: str, attempt: str | None = None
) -> RunAccount | None:
    """The run's ledger and budget on local runners (the ledger in the attempt's staging
    folder: it goes with it); None where nothing would use it."""
    control = run_control(opts)
    if not is_local_runner(runner):
        if control.max_cost is not None:
            logger.warning(
                "--max-cost $%g was checked against the plan; on this runner the run will "
                "not stop mid-run (no shared counter between workers: README, Budget and "
                "progress); its spend is the Beam counter spend_nano_usd",
                control.max_cost,
            )
        return None
    if control.progress == "none" and control.max_cost is None:
        return None
    if "://" in opts.output:
        folder = tempfile.mkdtemp(prefix=f"vlbeam-{run_id}-")
        path = os.path.join(folder, LEDGER_FILE)
    else:
        path = join(staging_dir(opts.output, run_id, attempt), LEDGER_FILE)
    counter = token_counter(opts) if control.max_cost is not None else None
    return RunAccount(
        RunLedger(path).create(), plan_prices(opts), control.max_cost, counter=counter
    )


class _Display:
    """The progress display; `stop()` returns the ledger's final figures."""

    def __init__(self, ledger: RunLedger, display: ProgressDisplay | None) -> None:
        self._ledger, self._display = ledger, display

    def stop(self) -> dict[str, int]:
        if self._display is not None:
            self._display.stop()
        return self._ledger.read()


def start_progress(opts: VlbeamOptions, account: RunAccount | None) -> _Display | None:
    if account is None or account.ledger is None:
        return None
    control = run_control(opts)
    display = None
    if control.progress != "none":
        display = ProgressDisplay(
            account.ledger, control.progress, control.progress_interval_s
        ).start()
    return _Display(account.ledger, display)


def finish_budget(account: RunAccount | None, live: dict[str, int] | None) -> None:
    """After the output is published: the one message of a run the budget stopped."""
    if account is None or not live or not live.get("budget_refused"):
        return
    raise BudgetExceeded(
        f"stopped at the budget: spent ${live['spend_nano_usd'] / 1e9:.6f} of --max-cost "
        f"${account.max_cost_usd:g}; {live['budget_refused']} unit(s) were not sent and are "
        f"BudgetExceeded rows in failures/; the output of the units done is published"
    )
