"""The publish lease: one publisher (or compaction) at a time per output folder, on any
filesystem that can create an object only if it is absent (outputs/store.py).

The lease is a sequence of generations, `DIR/_lease/<generation>.json`, each created with
`create_if_absent` and never modified:

    000000000041.json  {"owner": "try-…-1a2b", "expires_at": …}       held by one attempt
    000000000042.json  {"owner": "try-…-1a2b", "released": true}      given back
    000000000043.json  {"owner": "try-…-9f0e", "expires_at": …}       the next holder

The newest generation says who holds the lease. To take it, a publisher reads the newest
generation N; if it is released, expired, or held by a process on this host that is gone, it
creates N+1: exactly one contender succeeds, the others re-read and wait. The holder renews by
creating N+1 itself before its record expires, and releases by creating a `released`
generation. So no record is ever overwritten or deleted while it matters, and the only primitive
needed is create-if-absent (local: `os.link`; gs://: `if_generation_match=0`; s3://:
`IfNoneMatch`). The holder's generation number is also its place in the commit order (`seq` in
the commit record), since generations only grow.

Limits (the usual ones of a lease):
- Expiry compares the holder's wall clock with the reader's: clocks must agree to well within
  `ttl_s` (default 10 min). A holder on another host that dies keeps others waiting until its
  record expires; on the same host a dead holder is noticed at once (pid and start time).
- A holder that stops for longer than `ttl_s` (suspended VM, SIGSTOP) between renewals may
  find the lease taken: it checks (`check`) right before it commits and stops with `LeaseLost`
  if so; the window left is that one check and the commit write.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import time
from dataclasses import dataclass, field

from vlbeam.outputs.layout import join, lease_dir, match
from vlbeam.outputs.store import create_if_absent, delete_quietly, read_bytes

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 600.0
DEFAULT_WAIT_S = 3600.0
KEEP_GENERATIONS = 100  # older generation files are deleted (a reader never needs them)


class LeaseBusy(RuntimeError):
    """Another publisher kept the lease for longer than we were willing to wait."""


class LeaseLost(RuntimeError):
    """Our lease expired and another publisher took it: we must not commit."""


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return round(psutil.Process(pid).create_time(), 2)
    except Exception:
        return None


def _process_gone(pid: int, started: float | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    now_started = _process_started(pid)
    return started is not None and now_started is not None and now_started != started


@dataclass
class PublishLease:
    output: str
    owner: str  # the attempt id
    run_id: str = ""
    ttl_s: float = DEFAULT_TTL_S
    wait_s: float = DEFAULT_WAIT_S
    poll_s: float = 0.05
    generation: int | None = None
    _renewed_at: float = field(default=0.0, repr=False)
    _unreadable_since: dict[str, float] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ reading

    def _path(self, generation: int) -> str:
        return join(lease_dir(self.output), f"{generation:012d}.json")

    def _generations(self) -> list[str]:
        return match(join(lease_dir(self.output), "*.json"))

    def latest(self) -> tuple[int, dict | None]:
        """The newest generation and its record (None: no lease ever, or unreadable)."""
        for _ in range(5):
            paths = self._generations()
            if not paths:
                return 0, None
            newest = paths[-1]
            generation = self._number(newest)
            data = read_bytes(newest)
            if data is None:  # deleted between the listing and the read: list again
                continue
            try:
                return generation, json.loads(data)
            except ValueError:
                return generation, {"unreadable": newest}
        return 0, None

    def _free(self, record: dict | None) -> bool:
        if record is None:
            return True
        if "unreadable" in record:  # being written without a hard link: wait up to ttl_s
            first = self._unreadable_since.setdefault(record["unreadable"], time.time())
            return time.time() - first > self.ttl_s
        if record.get("released"):
            return True
        if float(record.get("expires_at", 0)) < time.time():
            logger.warning("the publish lease of %s expired; taking it", record.get("owner"))
            return True
        here = record.get("host") == socket.gethostname() and record.get("pid")
        if here and _process_gone(int(record["pid"]), record.get("pid_started")):
            logger.warning("the publish lease's holder (pid %s) is gone; taking it",
                           record["pid"])  # fmt: skip
            return True
        return False

    def _record(self, **extra) -> bytes:
        now = time.time()
        record = {"owner": self.owner, "run_id": self.run_id, "host": socket.gethostname(),
                  "pid": os.getpid(), "pid_started": _process_started(os.getpid()),
                  "acquired_at": now, "expires_at": now + self.ttl_s, **extra}  # fmt: skip
        return json.dumps(record, sort_keys=True).encode()

    # ------------------------------------------------------------------ holding

    def acquire(self) -> int:
        """Take the lease, waiting up to `wait_s`; returns our generation."""
        deadline = time.monotonic() + self.wait_s
        while True:
            generation, record = self.latest()
            if self._free(record) and create_if_absent(self._path(generation + 1), self._record()):
                self.generation = generation + 1
                self._renewed_at = time.monotonic()
                self.check()  # a contender with a stale listing could re-create an old number
                self._collect(self.generation)
                return self.generation
            if time.monotonic() > deadline:
                raise LeaseBusy(
                    f"{self.output} is being published by {(record or {}).get('owner')} "
                    f"(run {(record or {}).get('run_id')}); waited {self.wait_s:.0f} s"
                )
            time.sleep(self.poll_s)

    def check(self) -> None:
        """Raise `LeaseLost` unless our generation is still the newest."""
        generation, record = self.latest()
        if self.generation is None or generation != self.generation:
            raise LeaseLost(
                f"the publish lease of {self.output} was taken by {(record or {}).get('owner')} "
                f"(generation {generation}, ours {self.generation}): not committing"
            )

    def keep(self) -> None:
        """Renew the lease if a third of its time has passed; check we still hold it."""
        if self.generation is None:
            raise LeaseLost("the publish lease is not held")
        if time.monotonic() - self._renewed_at < self.ttl_s / 3:
            return
        self.check()
        if not create_if_absent(self._path(self.generation + 1), self._record()):
            raise LeaseLost(f"the publish lease of {self.output} was taken while renewing it")
        self.generation += 1
        self._renewed_at = time.monotonic()

    def release(self) -> None:
        if self.generation is None:
            return
        generation, self.generation = self.generation, None
        if not create_if_absent(self._path(generation + 1), self._record(released=True)):
            logger.warning("the publish lease of %s was taken before it was released",
                           self.output)  # fmt: skip

    def _collect(self, generation: int) -> None:
        oldest = generation - KEEP_GENERATIONS
        old = [p for p in self._generations() if self._number(p) < oldest]
        delete_quietly(old)

    @staticmethod
    def _number(path: str) -> int:
        return int(posixpath.basename(path)[: -len(".json")])

    def __enter__(self) -> PublishLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
