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
import contextlib
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Protocol, runtime_checkable

from vlbeam.schemas.elements import VLRequest, VLResult
from vlbeam.schemas.errors import EngineUnavailable

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


def request_bytes(request: VLRequest) -> int:
    """Encoded image bytes a request carries (what it holds in memory while in flight)."""
    return sum(len(data) for data in request.images)


# What a broken device says (torch's messages): the context is gone, every later call fails
# too. Out-of-memory is not one of them: a smaller batch may still run.
_FATAL_DEVICE = (
    "cuda error",
    "cublas_status",
    "cudnn_status",
    "device-side assert",
    "illegal memory access",
    "nccl error",
    "cuda driver",
)


def is_fatal_device_error(exc: BaseException) -> bool:
    """True for an error after which the device can't run anything (a corrupted CUDA
    context), as opposed to one batch's failure (out of memory, a bad input)."""
    text = f"{type(exc).__name__}: {exc}".lower()
    if "out of memory" in text or "outofmemory" in text:
        return False
    return any(marker in text for marker in _FATAL_DEVICE)


class _DeviceDead(BaseException):
    """Raised through `run_batch_or_each` (it catches Exception) when the device is broken:
    running the batch's requests one by one would only fail each of them slowly."""


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
    a batch never exceeds the pixel budget unless one request alone does, and holds requests
    of one temperature (the first queued one's: the others wait for the next batch, so
    retries at a new temperature are batched together, not split one by one).

    The breaker: a `generate` call running past `generate_timeout_s`, or a device error that
    leaves the device unusable (`is_fatal_device_error`), opens it. The running batch and
    everything queued then fail at once as `EngineUnavailable`, and so does every later
    request (the stuck call can't be interrupted from Python; its results, if any, are
    dropped). `close()` fails what is still queued without running it.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_batch_pixels: int | None = None,
        linger_s: float | None = None,
        pixels: Callable[[VLRequest], int] = request_pixels,
        generate_timeout_s: float | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if generate_timeout_s is not None and generate_timeout_s <= 0:
            raise ValueError("generate_timeout_s must be positive")
        self._run_batch = run_batch
        self._max_size = max_batch_size
        self._max_pixels = max_batch_pixels
        self._linger = linger_s
        self._pixels = pixels
        self._timeout = generate_timeout_s
        self._queue: collections.deque[tuple[VLRequest, int, Future]] = collections.deque()
        self._queued_pixels = 0
        self._flush = False
        self._closed = False
        self._broken: str | None = None  # the breaker: why this engine can't serve
        self._running: list[Future] = []  # the futures of the batch being run
        self._running_since: float | None = None
        self._last_submit = time.monotonic()
        self._cond = threading.Condition()
        self._done_batches: list[int] = []  # sizes of the batches run, not yet reported
        self._thread = threading.Thread(target=self._loop, name="vlbeam-batching", daemon=True)
        self._thread.start()
        self._watchdog: threading.Thread | None = None
        if generate_timeout_s is not None:
            self._watchdog = threading.Thread(
                target=self._watch, name="vlbeam-batching-watchdog", daemon=True
            )
            self._watchdog.start()

    @property
    def capacity(self) -> int:
        return 2 * self._max_size  # one batch running, the next one filling

    @property
    def broken(self) -> str | None:
        """Why the breaker is open (None: closed, the engine serves)."""
        return self._broken

    @property
    def stall_timeout_s(self) -> float | None:
        """No result at all for this long means the engine is stuck (see the stage)."""
        return None if self._timeout is None else 3 * self._timeout + 60

    def submit(self, request: VLRequest) -> Future[VLResult]:
        future: Future[VLResult] = Future()
        weight = self._pixels(request) if self._max_pixels else 0
        with self._cond:
            if self._closed:
                raise RuntimeError("engine is closed")
            if self._broken is not None:
                future.set_result(VLResult.failed(EngineUnavailable(self._broken)))
                return future
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

    def trip(self, reason: str) -> None:
        """Open the breaker (e.g. the stage saw no result for too long)."""
        self._open(reason)

    def take_batch_sizes(self) -> list[int]:
        """Sizes of the batches run since the last call (for the run summary)."""
        with self._cond:
            sizes, self._done_batches = self._done_batches, []
        return sizes

    def close(self) -> None:
        """Fail what is queued (never run for a caller that has gone), let the running batch
        end (bounded by the generate timeout), and stop the model's thread."""
        with self._cond:
            self._closed = True
            abandoned = self._drop_queue()
            self._cond.notify_all()
        _fail(abandoned, "the engine was closed before this request ran")
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self._timeout or 60)

    # -- the breaker ----------------------------------------------------------------------

    def _drop_queue(self) -> list[Future]:
        dropped = [future for _, _, future in self._queue]
        self._queue.clear()
        self._queued_pixels = 0
        self._flush = False
        return dropped

    def _open(self, reason: str) -> None:
        with self._cond:
            if self._broken is None:
                self._broken = reason
                logger.error("engine unavailable: %s", reason)
            futures = self._running + self._drop_queue()
            self._running = []
            self._cond.notify_all()
        _fail(futures, self._broken)

    def _watch(self) -> None:
        assert self._timeout is not None
        pause = min(1.0, self._timeout / 4)
        while True:
            with self._cond:
                if self._closed and not self._queue and self._running_since is None:
                    return
                since = self._running_since
            if since is not None and time.monotonic() - since > self._timeout:
                self._open(
                    f"a generate call ran longer than {self._timeout:g} s "
                    "(--generate-timeout-s); the model looks stuck"
                )
                return
            time.sleep(pause)

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
        """The next batch: the oldest request, and after it those of the same temperature
        (one generate call samples at one temperature), within the size and pixel budgets;
        requests of another temperature keep their place for the next batch."""
        batch, pixels, kept = [], 0, collections.deque()
        temperature = self._queue[0][0].temperature
        while self._queue and len(batch) < self._max_size:
            item = self._queue.popleft()
            request, weight, _ = item
            if request.temperature != temperature:
                kept.append(item)
                continue
            if batch and self._max_pixels and pixels + weight > self._max_pixels:
                self._queue.appendleft(item)
                break
            batch.append(item)
            pixels += weight
        self._queue.extendleft(reversed(kept))
        self._queued_pixels -= pixels
        if not self._queue:
            self._flush = False
        return batch

    def _guarded(self, requests: Sequence[VLRequest]) -> list[VLResult]:
        try:
            return self._run_batch(requests)
        except Exception as exc:
            if is_fatal_device_error(exc):
                raise _DeviceDead(f"{type(exc).__name__}: {exc}") from exc
            raise

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
                self._running = [future for _, _, future in batch]
                self._running_since = time.monotonic()
            logger.debug("batch start %.6f size %d", self._running_since, len(batch))
            try:
                results = run_batch_or_each(self._guarded, [r for r, _, _ in batch])
            except _DeviceDead as exc:
                self._open(f"the device failed and can't run anything more: {exc}")
                results = [VLResult.failed(EngineUnavailable(self._broken or str(exc)))] * len(
                    batch
                )
            except BaseException as exc:  # never leave a caller waiting on a dead thread
                results = [VLResult.failed(exc)] * len(batch)
            logger.debug("batch end %.6f size %d", time.monotonic(), len(batch))
            with self._cond:
                self._done_batches.append(len(batch))
                self._running, self._running_since = [], None
            for (_, _, future), result in zip(batch, results, strict=True):
                _resolve(future, result)


def _resolve(future: Future, result: VLResult) -> None:
    """Set a result unless the breaker or a close already failed the future."""
    with contextlib.suppress(InvalidStateError):
        future.set_result(result)


def _fail(futures: Sequence[Future], reason: str | None) -> None:
    for future in futures:
        _resolve(future, VLResult.failed(EngineUnavailable(reason or "engine unavailable")))


class InFlightBound:
    """One engine behind a bound on what is in flight in it, whoever submits: at most
    `max_requests` requests and `max_bytes` encoded image bytes sent or queued (a request
    larger than the byte bound alone still goes, once nothing else is in flight). One per
    engine, so K harness threads sharing it hold at most the bound, not K times it.

    `submit` blocks until there is room (flushing the engine first, so a batching engine
    starts what it has); every other attribute is the engine's."""

    def __init__(self, engine: Engine, *, max_requests: int, max_bytes: int | None) -> None:
        if max_requests < 1:
            raise ValueError("max_requests must be >= 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be positive (or None: no byte bound)")
        self.engine = engine
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._requests = 0
        self._bytes = 0
        self._cond = threading.Condition()

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    @property
    def capacity(self) -> int:
        return self.engine.capacity

    @property
    def in_flight(self) -> tuple[int, int]:
        """(requests, encoded bytes) in flight now."""
        with self._cond:
            return self._requests, self._bytes

    def _room(self, size: int) -> bool:
        if self._requests == 0:
            return True
        if self._requests >= self._max_requests:
            return False
        return self._max_bytes is None or self._bytes + size <= self._max_bytes

    def submit(self, request: VLRequest) -> Future[VLResult]:
        size = request_bytes(request)
        with self._cond:
            while not self._room(size):
                self._cond.release()
                try:
                    self.engine.flush()  # a batch waiting for company would never free room
                finally:
                    self._cond.acquire()
                if not self._room(size):
                    self._cond.wait(timeout=1.0)
            self._requests += 1
            self._bytes += size
        try:
            future = self.engine.submit(request)
        except BaseException:
            self._done(size)
            raise
        future.add_done_callback(lambda _f: self._done(size))
        return future

    def _done(self, size: int) -> None:
        with self._cond:
            self._requests -= 1
            self._bytes -= size
            self._cond.notify_all()

    def flush(self) -> None:
        self.engine.flush()

    def check(self) -> None:
        self.engine.check()

    def close(self) -> None:
        self.engine.close()
