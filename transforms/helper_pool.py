"""Render/decode on every core: a pool of helper processes per worker process (issue #27).

A worker process holds ONE pool of `workers` helper processes (`HelperProcess`, each driven by
a thread of this process that mostly waits on its pipe), shared by every DoFn instance and
harness thread of the process, like the process's one engine: N helpers render pages and
decode video windows in parallel, all feeding the same engine, so the model (or the
connection pool) still loads once.

How many helpers: `--render-workers N`; `0` (the default) means the CPUs this process may run
on (`os.sched_getaffinity`, so a `taskset`/cgroup-limited process counts only its own). On the
in-process runner that is every core of the machine. On Dataflow and Flink each SDK worker
process starts its own pool, whatever its number of harness threads: the threads' DoFn
instances share it (each instance keeps at most 2 x N units in flight), so the number of
helpers follows SDK processes, not threads. That is right for GPU workers, which run one SDK
process per VM (Dataflow: `--experiments=no_use_multiple_sdk_containers`; Flink/portable:
`--sdk_worker_parallelism=1`): N = the VM's cores feed its accelerator(s). On CPU-only
workers that run one SDK process per vCPU (Dataflow's default), pass `--render-workers 1`, or
every process would start one helper per core of the VM.

Memory stays bounded: each DoFn instance has a queue of at most `PREFETCH_PER_HELPER x N`
finished items (a rendered page, or a decoded window) waiting for it, each helper thread holds
at most one more while that queue is full, and an instance hands the pool at most 2 x N units
(small descriptors) at a time. A unit's items are made by one helper, in order; units finish
in any order.

Beam metrics are counted by the DoFn's own thread (counters updated on a pool thread would be
lost): work functions must not touch `Metrics`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from vlbeam.transforms.media.helper_process import HelperProcess

logger = logging.getLogger(__name__)

# Finished items (pages or windows) a helper may have waiting for the DoFn: enough to keep
# every helper busy while the DoFn submits the ones before to the engine, few enough that a
# slow engine holds only a handful of pages per core in memory.
PREFETCH_PER_HELPER = 4
# Units an instance hands the pool at once, per helper: one being made, one waiting.
UNITS_PER_HELPER = 2

Work = Callable[[HelperProcess, object], Iterable[object]]


def resolve_workers(workers: int) -> int:
    """`--render-workers`: N as given, or (0) the CPUs this process may run on."""
    if workers < 0:
        raise ValueError("render workers must be >= 0 (0 = every core)")
    if workers:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _Finished:
    unit: object


@dataclass(frozen=True)
class _Raised:
    error: BaseException


class HelperPool:
    """`workers` helper processes, each served by a thread that takes units from one queue
    and runs a work function on them, putting its items on the submitter's feed queue."""

    def __init__(self, workers: int, max_memory_mb: int) -> None:
        self.workers = workers
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = threading.Event()
        # the cores this process may use, shared out: one helper per core decodes video on
        # one thread (cheapest per frame), a lone helper on every core uses them all
        threads = max(1, resolve_workers(0) // workers)
        self._helpers = [HelperProcess(max_memory_mb, threads) for _ in range(workers)]
        self._threads = [
            threading.Thread(target=self._serve, args=(h,), name=f"vlbeam-helper-{i}", daemon=True)
            for i, h in enumerate(self._helpers)
        ]
        for thread in self._threads:
            thread.start()

    def helper_pids(self) -> set[int]:
        """The helpers' process ids (those started so far)."""
        return {h.pid for h in self._helpers if h.pid is not None}

    def submit(self, unit: object, work: Work, feed: queue.Queue) -> None:
        self._jobs.put((unit, work, feed))

    def _serve(self, helper: HelperProcess) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._closing.is_set():
                return
            unit, work, feed = job
            try:
                for item in work(helper, unit):
                    if not self._put(feed, item):
                        break  # closing: the rest of the unit is dropped (close kills helpers)
                else:
                    self._put(feed, _Finished(unit))
            except BaseException as exc:
                if self._put(feed, _Raised(exc)):
                    self._put(feed, _Finished(unit))

    def _put(self, feed: queue.Queue, item: object) -> bool:
        """Put `item` on a bounded feed; False (dropped) once the pool is closing, so a
        thread never waits on a feed nobody reads (e.g. after RunAborted) and close() is
        not held up by it."""
        while True:
            try:
                feed.put(item, timeout=0.2)
                return True
            except queue.Full:
                if self._closing.is_set():
                    return False

    def close(self) -> None:
        self._closing.set()
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        for helper in self._helpers:
            helper.close()


class UnitFeed:
    """One DoFn instance's use of the pool: units go in, their items come out, bounded.

    `put(unit)` and `ready()` / `drain()` yield the items finished so far (a `work` function's
    output), in the order the helpers made them; an exception raised by `work` is raised
    here."""

    def __init__(self, pool: HelperPool, work: Work) -> None:
        self._pool, self._work = pool, work
        self.max_waiting = pool.workers * PREFETCH_PER_HELPER
        self.max_units = pool.workers * UNITS_PER_HELPER
        self._queue: queue.Queue = queue.Queue(maxsize=self.max_waiting)
        self.in_flight = 0

    def put(self, unit: object) -> Iterator[object]:
        """Hand `unit` to the pool, first taking items while as many units as allowed are
        in flight."""
        while self.in_flight >= self.max_units:
            yield from self._take(block=True)
        self._pool.submit(unit, self._work, self._queue)
        self.in_flight += 1

    def ready(self) -> Iterator[object]:
        """The items finished now, without waiting."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            yield from self._unwrap(item)

    def drain(self) -> Iterator[object]:
        """Every item of every unit handed in, waiting for them."""
        while self.in_flight:
            yield from self._take(block=True)
        yield from self.ready()

    def _take(self, block: bool) -> Iterator[object]:
        yield from self._unwrap(self._queue.get(block))

    def _unwrap(self, item: object) -> Iterator[object]:
        if isinstance(item, _Finished):
            self.in_flight -= 1
        elif isinstance(item, _Raised):
            raise item.error
        else:
            yield item
