"""The `running` record of one attempt of a run, and the clean-up of attempts that are over.

`DIR/_attempts/<run_id>/<attempt>.json` is written when an attempt starts (start time, host,
pid, and the planned totals once known) and rewritten every `heartbeat_s` (`alive_at`), then a
last time when it ends (`committed` or `failed`). A monitor reads it: a record that says
`running` with an `alive_at` older than a few heartbeats belongs to a run that died (killed,
machine lost) — no other record of such a run exists. `planned` is filled by whoever knows the
totals (`AttemptRecord.plan`, e.g. the document and page counts of `vlbeam plan`).

Staging is per attempt (`_staging/<run_id>/<attempt>/`): an attempt removes its own folder when
it fails or commits; folders of attempts that died are removed by the next publish into the
output (`collect_staging`, run under the publish lease): an attempt is over when its record says
so, when its process is gone (same host), or when its heartbeat is older than `STALE_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime

from vlbeam.outputs.layout import (
    attempt_record,
    files,
    join,
    read_json,
    staging_dir,
    staging_root,
)
from vlbeam.outputs.store import delete_quietly, write_whole

logger = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
STALE_AFTER_S = 10 * HEARTBEAT_S


def _now() -> str:
    return datetime.now(UTC).isoformat()


class AttemptRecord:
    """One attempt's `running` record (see the module docstring)."""

    def __init__(
        self, output: str, run_id: str, attempt: str, *, heartbeat_s: float = HEARTBEAT_S
    ) -> None:
        self.path = attempt_record(output, run_id, attempt)
        self.output, self.run_id, self.attempt = output, run_id, attempt
        self.heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.record: dict = {
            "run_id": run_id,
            "attempt": attempt,
            "status": "running",
            "started_at": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "planned": {},
        }

    def _write(self, *, strict: bool = False, **changes) -> None:
        with self._lock:
            self.record.update(changes, alive_at=_now(), alive_at_s=time.time())
            data = json.dumps(self.record, indent=2, sort_keys=True).encode()
            try:
                write_whole(self.path, data)
            except Exception as exc:
                if strict:
                    raise
                logger.warning("could not write the running record %s: %s", self.path, exc)

    def start(self, planned: dict[str, int] | None = None) -> AttemptRecord:
        """Write the record before anything is staged: an attempt without one is over to
        everyone else (its staging is removed), so failing to write it stops the run."""
        self._write(strict=True, planned=dict(planned or {}))
        self._thread = threading.Thread(
            target=self._beat, name=f"vlbeam-heartbeat-{self.attempt}", daemon=True
        )
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._write()

    def plan(self, totals: dict[str, int]) -> None:
        """Record the planned totals (e.g. {"documents": 12, "pages": 3400, "windows": 80})."""
        self._write(planned={**self.record.get("planned", {}), **totals})

    def finish(self, status: str, error: str | None = None) -> None:
        """The attempt is over (`committed` or `failed`); its staging folder goes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._write(status=status, finished_at=_now(), error=error)
        remove_staging(self.output, self.run_id, self.attempt)


def attempt_over(record: dict | None) -> bool:
    """Whether an attempt (by its record) can no longer publish."""
    if not record:
        return True
    if record.get("status") != "running":
        return True
    if time.time() - float(record.get("alive_at_s", 0)) > STALE_AFTER_S:
        return True
    if record.get("host") == socket.gethostname() and record.get("pid"):
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


def remove_staging(output: str, run_id: str, attempt: str) -> None:
    folder = staging_dir(output, run_id, attempt)
    delete_quietly(files(folder, "**"))
    if "://" not in output and os.path.isdir(folder):
        delete_quietly([folder])
    _remove_empty_folders(output)


def _staged_files(root: str) -> list[tuple[str, float]]:
    from apache_beam.io.filesystems import FileSystems

    try:
        found = FileSystems.match([join(root, "**")])[0].metadata_list
    except Exception:  # a missing folder matches nothing
        return []
    return [(m.path, m.last_updated_in_seconds) for m in found]


def collect_staging(output: str) -> list[str]:
    """Remove the staging folders of attempts that are over; returns the attempts removed.
    A folder without a running record (written by a vlbeam from before them, or by hand) is
    over once nothing in it changed for `STALE_AFTER_S`."""
    root = staging_root(output)
    by_attempt: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for path, changed in _staged_files(root):
        parts = path[len(root) :].lstrip("/").split("/")
        if len(parts) >= 2:
            by_attempt.setdefault((parts[0], parts[1]), []).append((path, changed))
    removed = []
    for (run_id, child), found in sorted(by_attempt.items()):
        paths = [p for p, _ in found]
        record = read_json_quiet(attempt_record(output, run_id, child))
        if record is None:
            over = time.time() - max(changed for _, changed in found) > STALE_AFTER_S
        else:
            over = attempt_over(record)
        if over:
            delete_quietly(paths)
            folder = join(root, run_id, child)
            if "://" not in output and os.path.isdir(folder):
                delete_quietly([folder])
            removed.append(f"{run_id}/{child}")
    _remove_empty_folders(output)
    return removed


def read_json_quiet(path: str) -> dict | None:
    if "://" not in path and not os.path.exists(path):
        return None
    return read_json(path)


def _remove_empty_folders(output: str) -> None:
    """Local only: object stores have no folders."""
    if "://" in output:
        return
    root = staging_root(output)
    if not os.path.isdir(root):
        return
    for current, _dirs, names in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if not names and not os.listdir(current):
            with contextlib.suppress(OSError):
                os.rmdir(current)
