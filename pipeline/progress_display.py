"""Seeing a run while it runs: `--progress bar|log|none`, `--progress-interval-s`, and the
budget flag `--max-cost` (declared here with them: the flags that watch a run).

The launcher reads the run's ledger (`transforms/run_ledger.py`, which every worker process on
this machine counts into) and shows units planned vs done, pages/s, failures so far, spend so
far and an ETA: a tqdm bar on a terminal, else (cron, CI, a redirected stderr) one log line
every `--progress-interval-s`. Distributed runners have no shared ledger: there the same
figures are Beam counters (`units_planned`, `units_done`, `units_failed`, `tokens`,
`spend_nano_usd`) in the runner's UI.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass

from vlbeam.schemas.flags import flag
from vlbeam.transforms.run_ledger import RunLedger

logger = logging.getLogger(__name__)

PROGRESS_MODES = ("bar", "log", "none")
BAR_REFRESH_S = 0.5


@dataclass(frozen=True)
class RunControl:
    max_cost: float | None = flag(
        None,
        help="USD: refuse to start when the plan's upper bound exceeds it, and send no new "
        "request once the spend (tokens used x prices) reaches it; units left become "
        "BudgetExceeded failures and the run exits non-zero (needs --price-input-per-mtok "
        "and --price-output-per-mtok; the stop mid-run works on the in-process and local "
        "runners, see README)",
    )
    progress: str = flag(
        "bar",
        choices=PROGRESS_MODES,
        help="in-process and local runners: bar (a live bar on a terminal, log lines "
        "otherwise), log (log lines), none",
    )
    progress_interval_s: float = flag(10.0, help="seconds between progress log lines")

    def __post_init__(self) -> None:
        if self.max_cost is not None and self.max_cost < 0:
            raise ValueError("--max-cost must be >= 0")
        if self.progress not in PROGRESS_MODES:
            raise ValueError(f"--progress must be one of {PROGRESS_MODES}")
        if self.progress_interval_s <= 0:
            raise ValueError("--progress-interval-s must be positive")


def progress_figures(values: dict[str, int], elapsed_s: float) -> dict:
    """The figures shown, from the ledger's counters after `elapsed_s` seconds."""
    planned, done = values.get("units_planned", 0), values.get("units_done", 0)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left = max(planned - done, 0)
    return {
        "planned": planned,
        "done": done,
        "failed": values.get("units_failed", 0),
        "pages_per_s": values.get("pages_done", 0) / elapsed_s if elapsed_s > 0 else 0.0,
        "spend_usd": values.get("spend_nano_usd", 0) / 1e9,
        "eta_s": left / rate if rate > 0 else None,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"
    )


def progress_line(fig: dict) -> str:
    return (
        f"progress: {fig['done']}/{fig['planned']} units done ({fig['failed']} failed), "
        f"{fig['pages_per_s']:.2f} pages/s, spend ${fig['spend_usd']:.4f}, "
        f"ETA {_duration(fig['eta_s'])}"
    )


class ProgressDisplay:
    """A thread drawing the ledger's figures until `stop()` (which draws them once more)."""

    def __init__(self, ledger: RunLedger, mode: str, interval_s: float, stream=None) -> None:
        self._ledger, self._interval = ledger, interval_s
        self._stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self.mode = "bar" if mode == "bar" and tty else ("none" if mode == "none" else "log")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._bar = None

    def start(self) -> ProgressDisplay:
        if self.mode != "none":
            self._thread = threading.Thread(target=self._loop, name="vlbeam-progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        self._draw()  # the final figures
        if self._bar is not None:
            self._bar.close()

    def _loop(self) -> None:
        wait = BAR_REFRESH_S if self.mode == "bar" else self._interval
        while not self._stop.wait(wait):
            self._draw()

    def _draw(self) -> None:
        try:
            values = self._ledger.read()
        except OSError:  # the run's staging folder is gone (published): nothing to show
            return
        fig = progress_figures(values, time.monotonic() - self._started)
        if self.mode == "log":
            logger.info("%s", progress_line(fig))
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=fig["planned"], unit="unit", file=self._stream,
                             dynamic_ncols=True)  # fmt: skip
        self._bar.total = max(fig["planned"], fig["done"])
        self._bar.set_postfix_str(
            f"{fig['pages_per_s']:.2f} pages/s, {fig['failed']} failed, ${fig['spend_usd']:.4f}",
            refresh=False,
        )
        self._bar.update(fig["done"] - self._bar.n)  # tqdm's own rate and ETA
        self._bar.refresh()
