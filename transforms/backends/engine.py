"""The one interface every backend implements, and the batching engine for static-batch models.

A backend (`InferenceBackend`) says what it is (backend, provider, model name: the provenance
columns) and creates an `Engine` once per worker process. An engine takes requests one at a
time (`submit` returns a future) and works continuously:

- an HTTP engine sends each request as soon as a concurrency slot frees up;
- `BatchingEngine` (local `transformers`) runs `generate` in its own thread on batches of up to
  `max_batch_size` requests under a pixel budget, taken from a queue that the caller keeps
  filled while the previous batch runs, so rendering and decoding overlap the model.

`capacity` is how many requests a caller may keep outstanding: enough that the next batch (or
the next free slot) always finds work queued, and no more, so memory stays bounded however
large the input.
"""

from __future__ import annotations

import collections
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Protocol, runtime_checkable

from vlbeam.schemas.elements import VLRequest, VLResult

logger = logging.getLogger(__name__)


@runtime_checkable
class Engine(Protocol):
    """One per worker process, shared by every DoFn instance and thread in it."""

    @property
    def capacity(self) -> int: ...

    def submit(self, request: VLRequest) -> Future[VLResult]:
        """Queue one request; the future resolves to its result (never raises: a failure is a
        result with `error_type`)."""
        ...

    def flush(self) -> None:
        """Start whatever is queued now, even a partial batch (the end of a bundle)."""
        ...

    def check(self) -> None:
        """Raise if the run must stop (e.g. every API request was rejected)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class InferenceBackend(Protocol):
    """What the job needs from a backend: provenance, and an engine per worker process."""

    backend: str

    @property
    def provider(self) -> str | None: ...

    @property
    def model_name(self) -> str: ...

    def create_engine(self) -> Engine: ...


def request_pixels(request: VLRequest) -> int:
    """Pixels a request shows the model (image headers only, nothing decoded)."""
    from PIL import Image

    total = 0
    for data in request.images:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        total += width * height
    return total


RunBatch = Callable[[Sequence[VLRequest]], list[VLResult]]


def run_batch_or_each(run_batch: RunBatch, batch: Sequence[VLRequest]) -> list[VLResult]:
    """Run a batch; if it raises (or miscounts), retry each request alone, so one bad request
    fails alone and the rest of the batch is kept."""
    try:
        results = run_batch(batch)
        if len(results) != len(batch):
            raise RuntimeError(f"inference returned {len(results)} results for {len(batch)}")
        return results
    except Exception as exc:
        if len(batch) == 1:
            return [VLResult.failed(exc)]
        logger.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
    results = []
    for request in batch:
        try:
            results.append(run_batch([request])[0])
        except Exception as exc:
            results.append(VLResult.failed(exc))
    return results


class BatchingEngine:
    """Static batches for a model that runs one `generate` at a time, fed without barriers.

    A batch starts when `max_batch_size` requests are queued, when the queued pixels reach
    `max_batch_pixels`, on `flush()`, or when nothing new has arrived for `linger_s` (None:
    never; the caller flushes at the end of its bundle). Requests are taken in arrival order;
    a batch never exceeds the pixel budget unless one request alone does.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_batch_pixels: int | None = None,
        linger_s: float | None = None,
        pixels: Callable[[VLRequest], int] = request_pixels,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._run_batch = run_batch
        self._max_size = max_batch_size
        self._max_pixels = max_batch_pixels
        self._linger = linger_s
        self._pixels = pixels
        self._queue: collections.deque[tuple[VLRequest, int, Future]] = collections.deque()
        self._queued_pixels = 0
        self._flush = False
        self._closed = False
        self._last_submit = time.monotonic()
        self._cond = threading.Condition()
        self._done_batches: list[int] = []  # sizes of the batches run, not yet reported
        self._thread = threading.Thread(target=self._loop, name="vlbeam-batching", daemon=True)
        self._thread.start()

    @property
    def capacity(self) -> int:
        return 2 * self._max_size  # one batch running, the next one filling

    def submit(self, request: VLRequest) -> Future[VLResult]:
        future: Future[VLResult] = Future()
        weight = self._pixels(request) if self._max_pixels else 0
        with self._cond:
            if self._closed:
                raise RuntimeError("engine is closed")
            self._queue.append((request, weight, future))
            self._queued_pixels += weight
            self._last_submit = time.monotonic()
            self._cond.notify_all()
        return future

    def flush(self) -> None:
        with self._cond:
            if self._queue:
                self._flush = True
                self._cond.notify_all()

    def check(self) -> None:
        return None

    def take_batch_sizes(self) -> list[int]:
        """Sizes of the batches run since the last call (for the run summary)."""
        with self._cond:
            sizes, self._done_batches = self._done_batches, []
        return sizes

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=60)

    # -- the model's thread -------------------------------------------------------------

    def _ready(self) -> bool:
        if not self._queue:
            return False
        if self._flush or self._closed or len(self._queue) >= self._max_size:
            return True
        if self._max_pixels and self._queued_pixels >= self._max_pixels:
            return True
        return self._linger is not None and time.monotonic() - self._last_submit >= self._linger

    def _take(self) -> list[tuple[VLRequest, int, Future]]:
        batch, pixels = [], 0
        while self._queue and len(batch) < self._max_size:
            request, weight, _ = self._queue[0]
            if batch and self._max_pixels and pixels + weight > self._max_pixels:
                break
            if batch and request.temperature != batch[0][0].temperature:
                break  # one generate call samples at one temperature
            batch.append(self._queue.popleft())
            pixels += weight
        self._queued_pixels -= pixels
        if not self._queue:
            self._flush = False
        return batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready():
                    if self._closed and not self._queue:
                        return
                    timeout = None
                    if self._linger is not None and self._queue:
                        timeout = max(0.0, self._linger - (time.monotonic() - self._last_submit))
                    self._cond.wait(timeout=timeout)
                batch = self._take()
            started = time.monotonic()
            logger.debug("batch start %.6f size %d", started, len(batch))
            try:
                results = run_batch_or_each(self._run_batch, [r for r, _, _ in batch])
            except BaseException as exc:  # never leave a caller waiting on a dead thread
                results = [VLResult.failed(exc)] * len(batch)
            logger.debug("batch end %.6f size %d", time.monotonic(), len(batch))
            with self._cond:
                self._done_batches.append(len(batch))
            for (_, _, future), result in zip(batch, results, strict=True):
                future.set_result(result)
