"""A run's live figures and its budget, shared by every worker process on this machine.

`RunLedger` is a small file of integer counters (units planned, done, failed, tokens, spend,
...) that any thread or process adds to under an exclusive `fcntl.flock`, and that the
launcher reads to draw the progress display and a monitor can read too. Why a file and not a
`multiprocessing.Manager`: the in-process runner's worker processes
(`--direct_running_mode=multi_processing`, `--target local --workers N`) are started by Beam,
not by vlbeam, and only get what the pickled DoFns carry; a path travels in a pickle, a
Manager's address and authkey would have to travel too (the key a secret in every pickle), and
the server would have to outlive the pipeline. A file needs no server, survives any worker's
crash, and costs one locked read-modify-write (microseconds) per model call. Beam's own
metrics can't serve: workers can't read them while the job runs.

`RunAccount` is what the inference stage counts into, with `--max-cost` on top: spend is
counted from the tokens each call actually used (the server's usage, or the run's own count
when it reports none), and once the spend has reached the budget `exhausted()` says so, and
the inference stage sends no new request.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from dataclasses import dataclass, field

from vlbeam.transforms.backends.vision_tokens import TokenCounter
from vlbeam.transforms.estimate import Prices

FIELDS = (
    "units_planned",  # pages and video windows planned
    "units_done",  # units that ended: a result or a failure
    "units_failed",  # of which failures (render, decode, inference, budget)
    "pages_done",
    "windows_done",
    "input_tokens",
    "output_tokens",
    "spend_nano_usd",  # from the tokens used and the prices
    "requests",  # model calls sent
    "budget_refused",  # units not sent because the budget was spent
)
_FORMAT = struct.Struct(f"<{len(FIELDS)}q")
_LOCKS: dict[str, threading.Lock] = {}  # flock is per open file: threads need their own lock
_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


@dataclass(frozen=True)
class RunLedger:
    """Counters in the file at `path` (local disk): picklable, opened per use."""

    path: str

    def create(self) -> RunLedger:
        """Make the file, all counters zero (the launcher, before the job starts)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "wb") as f:
            f.write(_FORMAT.pack(*([0] * len(FIELDS))))
        return self

    def add(self, **deltas: int) -> dict[str, int]:
        """Add to some counters at once; returns every counter after the addition."""
        unknown = set(deltas) - set(FIELDS)
        if unknown:
            raise KeyError(f"no such counter: {sorted(unknown)}")
        with _thread_lock(self.path), open(self.path, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                values = list(_FORMAT.unpack(f.read(_FORMAT.size)))
                for i, name in enumerate(FIELDS):
                    values[i] += int(deltas.get(name, 0))
                f.seek(0)
                f.write(_FORMAT.pack(*values))
                f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return dict(zip(FIELDS, values, strict=True))

    def read(self) -> dict[str, int]:
        with open(self.path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                data = f.read(_FORMAT.size)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return dict(zip(FIELDS, _FORMAT.unpack(data), strict=True))


@dataclass(frozen=True)
class RunAccount:
    """What the inference stage counts into, and `--max-cost` over it: a ledger (None on
    distributed runners: nothing shared to count into), the prices, the budget (None: no
    limit). Spend is in nano-dollars, from tokens and `prices`, whatever the backend."""

    ledger: RunLedger | None = None
    prices: Prices = field(default_factory=Prices)
    max_cost_usd: float | None = None
    counter: TokenCounter | None = None  # counts a call whose server reports no usage

    def __post_init__(self) -> None:
        if self.max_cost_usd is not None:
            if self.max_cost_usd < 0:
                raise ValueError("--max-cost must be >= 0")
            if not self.prices.set:
                raise ValueError(
                    "--max-cost needs prices: --price-input-per-mtok and --price-output-per-mtok"
                )

    def add(self, **deltas: int) -> None:
        if self.ledger is not None:
            self.ledger.add(**deltas)

    def spend(self, input_tokens: int, output_tokens: int) -> int:
        """Count one model call's tokens and their cost; returns the call's nano-dollars."""
        cost = self.prices.nano_usd(input_tokens, output_tokens)
        self.add(input_tokens=input_tokens, output_tokens=output_tokens, spend_nano_usd=cost,
                 requests=1)  # fmt: skip
        return cost

    def exhausted(self) -> bool:
        """Whether the spend so far has reached the budget: then no request is sent."""
        if self.max_cost_usd is None or self.ledger is None:
            return False
        return self.ledger.read()["spend_nano_usd"] >= round(self.max_cost_usd * 1e9)

    def refusal(self) -> str:
        """The message of a unit not sent because the budget is spent."""
        spent = self.ledger.read()["spend_nano_usd"] / 1e9 if self.ledger else 0.0
        return f"not sent: the run's spend ${spent:.6f} reached --max-cost ${self.max_cost_usd:g}"
