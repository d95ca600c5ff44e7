"""The helper pool (issue #27): N helper processes per worker process, all feeding one engine,
with bounded prefetch; outputs the same as with one helper."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time

import pytest

from tests.pipeline_helpers import fake_handler, inked_page, read_table, run_job
from vlbeam.schemas.elements import VLResult
from vlbeam.transforms.helper_pool import HelperPool, UnitFeed, resolve_workers


def test_resolve_workers_counts_this_processes_cpus():
    import os

    assert resolve_workers(3) == 3
    assert resolve_workers(0) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError):
        resolve_workers(-1)


def test_feed_bounds_what_waits_and_what_is_in_flight():
    """A slow consumer: the helpers never run further ahead than the feed's queue plus one
    item each, and never more units are handed over than allowed."""
    pool = HelperPool(2, 512)
    lock = threading.Lock()
    made = [0]
    ahead = []

    def work(_helper, unit):
        for k in range(5):
            with lock:
                made[0] += 1
            yield (unit, k)

    feed = UnitFeed(pool, work)
    taken = []
    try:
        for unit in range(20):
            for item in itertools.chain(feed.put(unit), feed.ready()):  # lazily
                taken.append(item)
                time.sleep(0.002)
                with lock:
                    ahead.append(made[0] - len(taken))
            assert feed.in_flight <= feed.max_units
        taken += list(feed.drain())
    finally:
        pool.close()
    assert sorted(taken) == [(u, k) for u in range(20) for k in range(5)]
    assert feed.in_flight == 0
    assert max(ahead) <= feed.max_waiting + pool.workers
    # within a unit, items keep their order
    for unit in range(20):
        assert [k for u, k in taken if u == unit] == list(range(5))


def test_units_run_at_once_on_distinct_helper_processes(tmp_path):
    """Two units are in two helpers at the same time (a barrier both must reach), each
    helper a process of its own."""
    pdf = tmp_path / "doc.pdf"
    inked_page((200, 300)).save(pdf)
    pool = HelperPool(2, 1024)
    barrier = threading.Barrier(2, timeout=60)

    def work(helper, unit):
        pages = helper.count_pages(unit, str(pdf), None)  # starts this helper's process
        barrier.wait()  # raises BrokenBarrierError unless both units run concurrently
        yield helper.pid, pages

    feed = UnitFeed(pool, work)
    try:
        got = [*feed.put("a"), *feed.put("b"), *feed.drain()]
        pids = pool.helper_pids()
    finally:
        pool.close()
    assert sorted(p for _, p in got) == [1, 1]
    assert {pid for pid, _ in got} == pids and len(pids) == 2


def test_an_error_in_a_work_function_reaches_the_dofn():
    pool = HelperPool(1, 512)

    def work(_helper, unit):
        yield unit
        raise RuntimeError("boom")

    feed = UnitFeed(pool, work)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            list(feed.put(1))
            list(feed.drain())
    finally:
        pool.close()


def _hash_answers(model, batch, cfg):
    return [
        VLResult(text=hashlib.sha256(r.images[0]).hexdigest()[:16], input_tokens=1,
                 output_tokens=1, finish_reason="stop", latency_s=0.0)
        for r in batch
    ]  # fmt: skip


@pytest.mark.timeout(600)
def test_two_helpers_feed_one_engine_and_give_the_same_rows_as_one(tmp_path, monkeypatch, capsys):
    """A 24-page PDF in ranges of 2 pages: with --render-workers 2 the pages are rendered by
    two helper processes (their pids seen), the model loads once, and every row is the
    same as with --render-workers 1."""
    pdf = tmp_path / "in" / "doc.pdf"
    pdf.parent.mkdir()
    pages = [inked_page((300, 400), label=f"page {i}") for i in range(24)]
    pages[0].save(pdf, save_all=True, append_images=pages[1:])

    from vlbeam.transforms.document_pages import PageRenderer

    pid_log = tmp_path / "pids.log"
    real_pages = PageRenderer.pages

    def logged_pages(self, helper, task):
        for page in real_pages(self, helper, task):
            with open(pid_log, "a") as f:
                f.write(f"{helper.pid}\n")
            yield page

    monkeypatch.setattr(PageRenderer, "pages", logged_pages)
    loads = tmp_path / "loads.log"

    def loader(cfg):
        with open(loads, "a") as f:
            f.write("load\n")
        return object()

    rows = {}
    for workers in (1, 2):
        pid_log.unlink(missing_ok=True)
        handler = fake_handler(_hash_answers)
        handler._loader = loader
        out = tmp_path / f"out{workers}"
        run_job([str(pdf)], out, "--target-long-side=400", "--pages-per-task=2",
                f"--render-workers={workers}", handler=handler)  # fmt: skip
        assert "model loads: 1 " in capsys.readouterr().out
        pids = set(pid_log.read_text().split())
        assert len(pids) == workers, pids
        keep = ("page_number", "text", "width_px", "height_px", "text_layer", "text_source")
        rows[workers] = sorted(tuple(r[k] for k in keep) for r in read_table(out, "pages"))
    assert loads.read_text().splitlines() == ["load", "load"]  # once per run
    assert len(rows[1]) == 24 and rows[1] == rows[2]
    assert len({r[1] for r in rows[1]}) == 24  # every page's own image reached the model


def test_close_is_not_held_up_by_a_feed_nobody_reads():
    """After RunAborted the DoFn stops reading its feed: closing the pool drops the work
    waiting on the full feed instead of waiting for each helper thread's join timeout (a run
    aborted by 401s took 60 s longer before this)."""
    pool = HelperPool(2, 256)

    def endless(_helper, unit):
        while True:
            yield unit

    feed = UnitFeed(pool, endless)
    for unit in range(feed.max_units):
        list(feed.put(unit))  # fills the feed; nobody reads it afterwards
    time.sleep(0.5)
    assert feed._queue.full()
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 5
    assert not any(thread.is_alive() for thread in pool._threads)
