"""The engine interface: batches that reach --max-batch-size, a pixel budget, flush and linger,
per-request failure fallback, and the inference stage's flow (rendering overlaps the model,
requests outstanding bounded by the engine's capacity)."""

from __future__ import annotations

import io
import threading
import time
import uuid

import pytest
from PIL import Image

from tests.pipeline_helpers import SAMPLES_GLOB, fake_handler, inked_page, read_table, run_job
from vlbeam.schemas.elements import VLRequest, VLResult
from vlbeam.transforms.backends.engine import (
    BatchingEngine,
    Engine,
    InferenceBackend,
    request_pixels,
    run_batch_or_each,
)


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buf, format="PNG")
    return buf.getvalue()


def request(tag: str, size: tuple[int, int] = (10, 10), frames: int = 1) -> VLRequest:
    return VLRequest(images=(png(*size),) * frames, prompt=tag)


def ok(text: str) -> VLResult:
    return VLResult(text=text, input_tokens=1, output_tokens=1, finish_reason="stop")


class Recorder:
    """A model double that records each batch it is given."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s

    def __call__(self, batch):
        self.batches.append([r.prompt for r in batch])
        time.sleep(self.delay_s)
        return [ok(r.prompt.upper()) for r in batch]


def test_batches_fill_to_max_batch_size_without_flush():
    model = Recorder()
    engine = BatchingEngine(model, max_batch_size=4, max_batch_pixels=None)
    futures = [engine.submit(request(f"p{i}")) for i in range(8)]
    assert [f.result(timeout=10).text for f in futures] == [f"P{i}" for i in range(8)]
    assert model.batches == [[f"p{i}" for i in range(4)], [f"p{i}" for i in range(4, 8)]]
    engine.close()


def test_a_partial_batch_waits_for_flush():
    model = Recorder()
    engine = BatchingEngine(model, max_batch_size=4, max_batch_pixels=None)
    futures = [engine.submit(request(f"p{i}")) for i in range(3)]
    time.sleep(0.3)
    assert model.batches == [] and not any(f.done() for f in futures)
    engine.flush()
    assert [f.result(timeout=10).text for f in futures] == ["P0", "P1", "P2"]
    assert model.batches == [["p0", "p1", "p2"]]
    engine.close()


def test_linger_starts_a_partial_batch():
    model = Recorder()
    engine = BatchingEngine(model, max_batch_size=4, max_batch_pixels=None, linger_s=0.2)
    started = time.monotonic()
    future = engine.submit(request("alone"))
    assert future.result(timeout=10).text == "ALONE"
    assert 0.15 <= time.monotonic() - started < 5
    engine.close()


def test_pixel_budget_splits_batches_but_never_starves_a_big_request():
    model = Recorder()
    # pages are 100x100 = 10,000 px; a "window" of 8 such frames is 80,000 px
    engine = BatchingEngine(model, max_batch_size=8, max_batch_pixels=30_000)
    futures = [engine.submit(request(f"page{i}", (100, 100))) for i in range(4)]
    futures.append(engine.submit(request("window", (100, 100), frames=8)))
    futures.append(engine.submit(request("page4", (100, 100))))
    engine.flush()
    for f in futures:
        f.result(timeout=10)
    assert model.batches == [
        ["page0", "page1", "page2"],  # 30,000 px: full
        ["page3"],  # the window would overflow the budget
        ["window"],  # alone over budget: runs alone
        ["page4"],
    ]
    engine.close()


def test_request_pixels_reads_headers():
    assert request_pixels(request("x", (30, 20), frames=3)) == 30 * 20 * 3


def test_a_failing_batch_is_retried_request_by_request():
    def model(batch):
        if len(batch) > 1:
            raise RuntimeError("the batch as a whole failed")
        if batch[0].prompt == "bad":
            raise ValueError("this one is bad")
        return [ok(batch[0].prompt)]

    results = run_batch_or_each(model, [request("a"), request("bad"), request("c")])
    assert [r.text for r in results] == ["a", None, "c"]
    assert (results[1].error_type, results[1].error_message) == ("ValueError", "this one is bad")

    def miscount(batch):
        return [ok("only one")]

    results = run_batch_or_each(miscount, [request("a"), request("b")])
    assert [r.text for r in results] == ["only one", "only one"]  # retried one by one


def test_a_dying_model_thread_fails_the_requests_instead_of_hanging():
    def model(batch):
        raise KeyboardInterrupt  # not an Exception: escapes the per-request fallback

    engine = BatchingEngine(model, max_batch_size=2, max_batch_pixels=None)
    futures = [engine.submit(request("a")), engine.submit(request("b"))]
    assert [f.result(timeout=10).error_type for f in futures] == ["KeyboardInterrupt"] * 2


def test_the_backends_implement_the_interfaces():
    handler = fake_handler()
    assert isinstance(handler, InferenceBackend)
    engine = handler.create_engine()
    assert isinstance(engine, Engine) and engine.capacity == 2 * handler._cfg.max_batch_size
    engine.close()


@pytest.mark.timeout(300)
def test_the_stage_overlaps_rendering_with_the_model_and_bounds_what_is_outstanding(
    tmp_path, monkeypatch, capsys
):
    """A 24-page PDF with --max-batch-size 4: every batch is full (4) although the model is
    slow, the first batch starts long before the last page is rendered, and the requests
    submitted but not answered never exceed the engine's capacity (2 x 4) plus the helpers'
    bounded prefetch."""
    pdf = tmp_path / "in" / "doc.pdf"
    pdf.parent.mkdir()
    pages = [inked_page((300, 400), (255, 255 - i, 255)) for i in range(24)]
    pages[0].save(pdf, save_all=True, append_images=pages[1:])

    log = tmp_path / "batches.log"  # the handler is pickled into the pipeline: log to a file
    rendered_log = tmp_path / "rendered.log"
    from vlbeam.transforms.document_pages import PageRenderer

    real_pages = PageRenderer.pages

    def logged_pages(self, helper, task):
        for page in real_pages(self, helper, task):
            with open(rendered_log, "a") as f:
                f.write(f"{time.monotonic()}\n")
            yield page

    monkeypatch.setattr(PageRenderer, "pages", logged_pages)

    def slow_model(model, batch, cfg):
        with open(log, "a") as f:
            f.write(f"{time.monotonic()} {len(batch)}\n")
        time.sleep(0.15)
        return [ok("text") for _ in batch]

    out = tmp_path / "out"
    run_job(
        [str(pdf)],
        out,
        "--target-long-side=400",
        "--pages-per-task=24",  # one range: rendering and the model must overlap in one unit
        handler=fake_handler(slow_model, max_batch_size=4),
    )
    assert len(read_table(out, "pages")) == 24
    events = [line.split() for line in log.read_text().splitlines()]
    assert [int(n) for _, n in events] == [4] * 6
    assert "batches:   6 (mean size 4.00)" in capsys.readouterr().out
    # the model started long before the last page was rendered, and the renderer never ran
    # more than the engine's capacity (2 x 4) plus the helpers' prefetch (items waiting for
    # the DoFn, and one held by each helper's thread) ahead of the batches already started
    from vlbeam.transforms.helper_pool import PREFETCH_PER_HELPER, resolve_workers

    prefetch = (PREFETCH_PER_HELPER + 1) * resolve_workers(0)
    starts = [float(t) for t, _ in events]
    rendered = [float(t) for t in rendered_log.read_text().splitlines()]
    assert len(rendered) == 24 and starts[0] < rendered[-1]
    for k, start in enumerate(starts):
        ahead = sum(1 for t in rendered if t < start) - 4 * k  # rendered, not yet in a batch
        assert ahead <= 2 * 4 + prefetch, (k, ahead)


@pytest.mark.timeout(300)
def test_model_loads_once_per_process_and_is_counted(tmp_path, capsys):
    log = tmp_path / "loads.log"

    def loader(cfg):
        with open(log, "a") as f:
            f.write(cfg.model + "\n")
        return object()

    handler = fake_handler()
    handler._loader = loader
    run_job([SAMPLES_GLOB], tmp_path / "out", handler=handler)
    assert log.read_text().splitlines() == ["fake-model"]
    assert "model loads: 1 " in capsys.readouterr().out


def test_one_engine_per_process_shared_by_every_thread_and_closed_by_the_last():
    """The one registry of engines (a managed server's engine owns its servers): eight DoFn
        instances setting up at once get one engine, created once; the last to leave closes it
    (with no grace period)."""
    from vlbeam.transforms.engine_registry import acquire_engine, release_engine

    class Closing:
        closed = False

        def close(self) -> None:
            self.closed = True

    made: list[Closing] = []

    def create() -> Closing:
        time.sleep(0.05)  # a slow load: the other threads wait for it, none starts another
        made.append(Closing())
        return made[-1]

    key = uuid.uuid4().hex
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(acquire_engine(key, create)))
               for _ in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(made) == 1 and len(got) == 8
    assert all(engine is made[0] for engine, _ in got)
    assert sum(created for _, created in got) == 1
    for _ in range(7):
        release_engine(key)
    assert not made[0].closed
    release_engine(key, grace_s=0)  # no grace: closed now (see test_engine_lifetime)
    assert made[0].closed
    again, created = acquire_engine(key, create)  # after the last left: a new engine
    assert created and again is not made[0]
    release_engine(key, grace_s=0)
