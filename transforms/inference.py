"""Work units → model results, in one fused stage that never waits on a batch barrier.

Each `PageRange` is rendered and each `VideoWindow` decoded right here, by the worker process's
pool of helper processes (`helper_pool`: `--render-workers`, by default one per core, units
rendered in parallel), and every page or window is submitted to the worker process's engine as
soon as it exists. Results are emitted as they complete. The number of requests outstanding is
bounded by the engine's `capacity`, and the helpers run ahead of that by at most
`PREFETCH_PER_HELPER` items each (a bounded prefetch that overlaps rendering with inference),
so memory stays flat however long the input. One engine and one helper pool per worker
process, whatever the number of DoFn instances or threads: the model, the connection pool or
the managed server loads once, and both are closed when the last instance is torn down.

Output: (PageRef | WindowRef, VLResult) for results that came back, `failures` (stage
`render`, `decode` or `inference`), and with `--figures crop` the `figures` rows cropped from
each page image when its answer arrives (`transforms/figures.py`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from vlbeam.schemas.config import PagePolicy, Prompt, RenderConfig
from vlbeam.schemas.elements import (
    Failure,
    PageImage,
    PageRange,
    PageRef,
    VideoWindow,
    VLRequest,
    VLResult,
    WindowFrames,
)
from vlbeam.transforms.answers.retry import Answer, better_answer, retry_temperature
from vlbeam.transforms.backends.engine import Engine, InferenceBackend
from vlbeam.transforms.dead_letter import FAILURES_TAG, NAMESPACE, dead_letter
from vlbeam.transforms.document_pages import PageRenderer
from vlbeam.transforms.figures import FIGURES_TAG, FigureCropper
from vlbeam.transforms.grounding import window_request
from vlbeam.transforms.helper_pool import HelperPool, UnitFeed, resolve_workers
from vlbeam.transforms.media.text_layer import clean_text_layer, decide_page
from vlbeam.transforms.media.work_units import VideoConfig
from vlbeam.transforms.ocr import DEFAULT_POLICY, page_request
from vlbeam.transforms.video_frames import WindowSampler

logger = logging.getLogger(__name__)


_ENGINES: dict[str, list] = {}  # this process's engines: key -> [engine, users]
_ENGINES_LOCK = threading.Lock()


def acquire_engine(key: str, create: Callable[[], Engine]) -> tuple[Engine, bool]:
    """This process's engine for `key`, created on first use: (engine, created here).

    Like Beam's `Shared`, plus a count of users, so the last one to leave closes the engine
    (stops a managed server, frees a model) at teardown instead of at process exit."""
    with _ENGINES_LOCK:
        held = _ENGINES.get(key)
        if held is None:
            held = _ENGINES[key] = [create(), 0]
            created = True
        else:
            created = False
        held[1] += 1
        return held[0], created


def release_engine(key: str) -> None:
    with _ENGINES_LOCK:
        held = _ENGINES.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _ENGINES[key]
    held[0].close()


@dataclass(frozen=True)
class _Pending:
    """A request in flight: its key, the request (for a retry), which attempt it is, and the
    best answer so far (with --retry-degenerate)."""

    key: object
    request: VLRequest
    attempt: int = 0
    best: tuple[Answer, VLResult] | None = None


def page_without_model(page: PageImage, policy: PagePolicy) -> VLResult | None:
    """The page's result when no model call is needed (blank, or a usable text layer under
    `--text-layer-policy prefer`); None when the model must read it."""
    ref = page.ref
    decision = decide_page(
        policy.text_layer_policy,
        blank=ref.blank,
        text_layer=ref.text_layer,
        width_px=ref.width_px,
        height_px=ref.height_px,
        image_coverage=ref.image_coverage,
    )
    if decision.call_model:
        return None
    text = clean_text_layer(ref.text_layer or "") if decision.rule == "text_layer" else ""
    return VLResult(text=text, latency_s=0.0, text_source=decision.text_source)


def keep_or_retry(
    entry: _Pending, result: VLResult, retries: int
) -> tuple[VLResult | None, _Pending | None]:
    """With --retry-degenerate: (the answer to keep, None) or (None, the retry to send). A
    flagged answer is tried again at a rising temperature, up to `retries` times; the best
    of all attempts (fewest flags, then most useful text) is kept."""
    answer = Answer.of(result.text, result.finish_reason, attempt=entry.attempt)
    best = (answer, result)
    if entry.best is not None and better_answer(entry.best[0], answer) is entry.best[0]:
        best = entry.best
    if best[0].flags and entry.attempt < retries:
        attempt = entry.attempt + 1
        request = dataclasses.replace(entry.request, temperature=retry_temperature(attempt))
        return None, _Pending(entry.key, request, attempt, best)
    return dataclasses.replace(best[1], retries=entry.attempt), None


class _InferUnits(beam.DoFn):
    def __init__(
        self,
        backend: InferenceBackend,
        render: RenderConfig,
        video: VideoConfig,
        ocr_prompt: Prompt,
        grounding_prompt: Prompt,
        policy: PagePolicy = DEFAULT_POLICY,
        figures: FigureCropper | None = None,
    ) -> None:
        self._backend = backend
        self._policy = policy
        self._figures = figures  # --figures crop: crop from the page image right here
        self._render, self._video = render, video
        self._ocr_prompt, self._grounding_prompt = ocr_prompt, grounding_prompt
        self._key = uuid.uuid4().hex  # pickled along: every instance in a process shares it
        self._engine: Engine | None = None
        self._pool: HelperPool | None = None
        self._feed: UnitFeed | None = None
        self._pending: dict[concurrent.futures.Future, _Pending] = {}
        self._loaded_here = False

    def setup(self) -> None:
        self._pages = PageRenderer(self._render, counted=False)  # counted here, see _requests
        self._windows = WindowSampler(self._video, counted=False)
        self._rendered = Metrics.counter(NAMESPACE, "pages_rendered")
        self._windows_decoded = Metrics.counter(NAMESPACE, "video_windows_decoded")
        self._frames = Metrics.counter(NAMESPACE, "video_frames")

        def create() -> Engine:
            logger.info("loading %s engine for %s", self._backend.backend, self._backend.model_name)
            return self._backend.create_engine()

        def create_pool() -> HelperPool:
            workers = resolve_workers(self._render.workers)
            logger.info("rendering and decoding in %d helper processes", workers)
            return HelperPool(workers, max(self._render.max_memory_mb, self._video.max_memory_mb))

        self._engine, self._loaded_here = acquire_engine(self._key, create)
        self._pool, _ = acquire_engine(self._key + "/helpers", create_pool)
        self._feed = UnitFeed(self._pool, self._make)
        self._pending = {}

    def teardown(self) -> None:
        if self._engine is not None:
            self._engine = None
            release_engine(self._key)
        if self._pool is not None:
            self._pool, self._feed = None, None
            release_engine(self._key + "/helpers")

    def _make(self, helper, unit) -> Iterator[PageImage | WindowFrames | Failure]:
        """On a pool thread: a unit's rendered pages, or its decoded window (or failures)."""
        if isinstance(unit, PageRange):
            yield from self._pages.pages(helper, unit)
        elif isinstance(unit, VideoWindow):
            yield self._windows.frames(helper, unit)
        else:
            raise TypeError(f"not a work unit: {type(unit).__name__}")

    def _requests(self, item) -> Iterator[tuple[object, VLRequest | VLResult] | Failure]:
        """(key, request) for the model, (key, result) for a page that needs none, failures."""
        if isinstance(item, Failure):
            yield item
        elif isinstance(item, PageImage):
            self._rendered.inc()
            result = page_without_model(item, self._policy)
            yield (item.ref, result) if result else page_request(item, self._ocr_prompt)
        else:
            self._windows_decoded.inc()
            self._frames.inc(len(item.frames))
            yield window_request(item, self._grounding_prompt)

    def process(self, unit):
        if self._loaded_here:  # counted here: metrics from setup() are not reported
            Metrics.counter(NAMESPACE, "model_loads").inc()
            self._loaded_here = False
        for item in self._feed.put(unit):
            yield from self._infer(item)
        for item in self._feed.ready():
            yield from self._infer(item)

    def _infer(self, made):
        for item in self._requests(made):
            if isinstance(item, Failure):
                yield dead_letter(item)
                continue
            key, request = item
            if isinstance(request, VLResult):  # no model call needed
                Metrics.counter(NAMESPACE, f"model_calls_avoided.{request.text_source}").inc()
                yield key, request
                continue
            yield from self._collect(keep=self._engine.capacity - 1)
            self._submit(_Pending(key, request))
            yield from self._collect(keep=None)

    def _submit(self, entry: _Pending) -> None:
        self._pending[self._engine.submit(entry.request)] = entry

    def finish_bundle(self):
        for made in self._feed.drain():  # the units still being rendered or decoded
            yield from _windowed(self._infer(made))
        self._engine.flush()
        yield from _windowed(self._collect(keep=0, drain=True))
        sizes = getattr(self._engine, "take_batch_sizes", list)()
        if sizes:  # batched engines: how full their batches were, for the summary
            Metrics.counter(NAMESPACE, "model_batches").inc(len(sizes))
            Metrics.counter(NAMESPACE, "model_batch_requests").inc(sum(sizes))

    def _collect(self, keep: int | None, drain: bool = False):
        """Emit finished results; with `keep`, first wait until at most `keep` are pending
        (`drain`: the end of the bundle, so retries sent meanwhile must not wait for a batch)."""
        if keep is not None:
            while len(self._pending) > keep:
                if drain:
                    self._engine.flush()
                done, _ = concurrent.futures.wait(
                    self._pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                yield from self._emit(done)
        yield from self._emit([f for f in self._pending if f.done()])

    def _emit(self, done):
        for future in done:
            entry = self._pending.pop(future)
            result = future.result()
            self._engine.check()  # e.g. every API request rejected: stop the run
            if not result.ok and entry.best is not None:
                result = dataclasses.replace(entry.best[1], retries=entry.attempt)
            elif result.ok and self._policy.retry_degenerate and isinstance(entry.key, PageRef):
                result, retry = keep_or_retry(entry, result, self._policy.retry_degenerate)
                if retry is not None:
                    Metrics.counter(NAMESPACE, "model_retries").inc()
                    self._submit(retry)
                    continue
            if result.ok:
                if self._figures is not None and isinstance(entry.key, PageRef):
                    for row in self._figures.rows(entry.key, result, entry.request.images[0]):
                        yield beam.pvalue.TaggedOutput(FIGURES_TAG, row)
                yield entry.key, result
            else:
                yield dead_letter(
                    entry.key.failure("inference", result.error_type, result.error_message or "")
                )


def _windowed(outputs):
    """finish_bundle's outputs must carry their window."""
    for out in outputs:
        if isinstance(out, beam.pvalue.TaggedOutput):
            yield beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
        else:
            yield GlobalWindows.windowed_value(out)


class InferUnits(beam.PTransform):
    """PageRange / VideoWindow → dict of `results` ((ref, VLResult)) and `failures`."""

    def __init__(self, *args, **kwargs) -> None:
        """Arguments: those of `_InferUnits` (backend, render and video configs, prompts)."""
        super().__init__()
        self._fn = _InferUnits(*args, **kwargs)

    def expand(self, units):
        out = units | "RenderDecodeInfer" >> beam.ParDo(self._fn).with_outputs(
            FAILURES_TAG, FIGURES_TAG, main="results"
        )
        return {"results": out.results, "failures": out[FAILURES_TAG], "figures": out[FIGURES_TAG]}
