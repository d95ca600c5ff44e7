"""This worker process's engines (and helper pools), one per key, shared by every DoFn
instance and thread: the model, the connection pool or the managed server loads once.

Like Beam's `Shared`, plus a count of users: the registry creates and closes under one lock,
keeps an engine `IDLE_GRACE_S` after its last user left (Beam tears down idle bundle processors
after 60 s), and closes what is left at the process's exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vlbeam.transforms.backends.engine import Engine

logger = logging.getLogger(__name__)

# How long an engine nobody uses stays up: longer than Beam's teardown of bundle processors
# idle for 60 s, so a pause between bundles doesn't reload a model or cold-start a server
# (minutes) mid-job. The end of an in-process run (`close_idle_engines`) and the process's
# exit (atexit) close it sooner.
IDLE_GRACE_S = 600.0


@dataclass(eq=False)
class _Held:
    engine: object
    users: int = 0
    timer: threading.Timer | None = None


_ENGINES: dict[str, _Held] = {}  # this process's engines (and helper pools) by key
# Held while an engine is created or closed: an acquire during a close waits for it and gets a
# fresh engine, never the one being stopped, and two copies (two models, two servers on one
# GPU) never run at once.
_ENGINES_LOCK = threading.RLock()
_AT_EXIT = False


def acquire_engine(key: str, create: Callable[[], Engine]) -> tuple[Engine, bool]:
    """This process's engine for `key`, created on first use: (engine, created here).

    Like Beam's `Shared`, plus a count of users: when the last one leaves, the engine is
    closed after `IDLE_GRACE_S` unless someone takes it again meanwhile."""
    global _AT_EXIT
    with _ENGINES_LOCK:
        if not _AT_EXIT:  # registered on first use, not at import
            atexit.register(_close_all_engines)
            _AT_EXIT = True
        held = _ENGINES.get(key)
        created = held is None
        if held is None:
            held = _ENGINES[key] = _Held(create())
        elif held.timer is not None:
            held.timer.cancel()
            held.timer = None
        held.users += 1
        return held.engine, created


def release_engine(key: str, grace_s: float | None = None) -> None:
    """One user fewer; with none left, close the engine after `grace_s` (default
    `IDLE_GRACE_S`; 0: now). The close runs under the registry's lock."""
    grace = IDLE_GRACE_S if grace_s is None else grace_s
    with _ENGINES_LOCK:
        held = _ENGINES.get(key)
        if held is None:
            return
        held.users -= 1
        if held.users > 0:
            return
        if grace <= 0:
            _close(key, held)
            return
        held.timer = threading.Timer(grace, _close_if_idle, args=(key, held))
        held.timer.daemon = True
        held.timer.start()


def _close_if_idle(key: str, held: _Held) -> None:
    with _ENGINES_LOCK:
        if _ENGINES.get(key) is held and held.users == 0:
            _close(key, held)


def _close(key: str, held: _Held) -> None:
    """Under the lock: forget and close one engine (its errors logged, never raised)."""
    del _ENGINES[key]
    if held.timer is not None:
        held.timer.cancel()
    try:
        held.engine.close()
    except Exception:
        logger.exception("closing engine %s failed", key)


def close_idle_engines() -> None:
    """Close every engine nobody uses now (the end of an in-process run; at exit, all)."""
    with _ENGINES_LOCK:
        for key, held in list(_ENGINES.items()):
            if held.users == 0:
                _close(key, held)


def _close_all_engines() -> None:
    with _ENGINES_LOCK:
        for key, held in list(_ENGINES.items()):
            _close(key, held)
