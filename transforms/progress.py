"""Progress a person can follow in long local runs (per worker process)."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


class ProgressLog:
    """Logs a running count at most every `every_s` seconds (per worker process)."""

    def __init__(self, what: str, every_s: float = 10.0) -> None:
        self._what, self._every = what, every_s
        self._done, self._started, self._last = 0, 0.0, 0.0

    def tick(self) -> None:
        now = time.monotonic()
        self._started = self._started or now
        self._done += 1
        if self._done == 1 or now - self._last >= self._every:
            self._last = now
            elapsed = now - self._started
            rate = f" ({self._done / elapsed:.2f}/s)" if elapsed > 0 else ""
            logger.info("%s: %d done in this worker%s", self._what, self._done, rate)
