"""Work units → model results, in one fused stage that never waits on a batch barrier.

Each `PageRange` is rendered and each `VideoWindow` decoded right here, by the worker process's
pool of helper processes (`helper_pool`: `--render-workers`, by default one per core, units
rendered in parallel), and every page or window is submitted to the worker process's engine as
soon as it exists. Results are emitted as they complete. The number of requests outstanding is
bounded by the engine's `capacity`, and the helpers run ahead of that by at most
`PREFETCH_PER_HELPER` items each (a bounded prefetch that overlaps rendering with inference),
so memory stays flat however long the input. One engine and one helper pool per worker
process, whatever the number of DoFn instances or threads: the model, the connection pool or
the managed server loads once (`engine_registry`). What is in flight is bounded per engine,
in requests and in encoded bytes (`InFlightBound`, `--max-inflight-mb`). A wait for results
never blocks forever: no result for the engine's `stall_timeout_s` opens its breaker.
`RunAborted` (not an Exception, so Beam won't tear the bundle down) tears down what the
bundle started before it propagates.

Output: (PageRef | WindowRef, VLResult) for results that came back, `failures` (stage
`render`, `decode` or `inference`), and with `--figures crop` the `figures` rows cropped from
each page image when its answer arrives (`transforms/figures.py`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator
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
from vlbeam.schemas.errors import EngineUnavailable, RunAborted
from vlbeam.transforms.answers.preset_answers import needs_rotation
from vlbeam.transforms.answers.retry import Answer, better_answer, retry_temperature
from vlbeam.transforms.backends.engine import Engine, InferenceBackend, InFlightBound
from vlbeam.transforms.dead_letter import FAILURES_TAG, NAMESPACE, dead_letter
from vlbeam.transforms.document_pages import PageRenderer
from vlbeam.transforms.engine_registry import acquire_engine, release_engine
from vlbeam.transforms.figures import FIGURES_TAG, FigureCropper
from vlbeam.transforms.grounding import window_request
from vlbeam.transforms.helper_pool import HelperPool, UnitFeed, resolve_workers
from vlbeam.transforms.media.rotate import rotate_page_image
from vlbeam.transforms.media.text_layer import clean_text_layer, decide_page
from vlbeam.transforms.media.work_units import VideoConfig
from vlbeam.transforms.ocr import DEFAULT_POLICY, page_request
from vlbeam.transforms.run_ledger import RunAccount
from vlbeam.transforms.video_frames import WindowSampler

logger = logging.getLogger(__name__)

WAIT_POLL_S = 10.0  # how often a wait for results looks at the engine (abort, stall)


@dataclass(frozen=True)
class _Pending:
    """A request in flight: its key, the request (for a retry), which attempt it is, the
    best answer so far (with --retry-degenerate), and for olmOCR's rotation retry whether the
    page was re-sent turned (`rotated`) and the first answer (`fallback`, kept if the
    re-sent request fails)."""

    key: object
    request: VLRequest
    attempt: int = 0
    best: tuple[Answer, VLResult] | None = None
    rotated: bool = False
    fallback: VLResult | None = None


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
        return None, _Pending(entry.key, request, attempt, best, rotated=entry.rotated)
    return dataclasses.replace(best[1], retries=entry.attempt), None


def rotation_retry(entry: _Pending, result: VLResult, policy: PagePolicy) -> _Pending | None:
    """olmOCR 2's rotation retry (`--model-preset olmocr-2`): an answer saying the page is not
    upright (`is_rotation_valid: false`) sends the page again turned counter-clockwise by its
    `rotation_correction` (PIL `transpose(ROTATE_<n>)`, as olmOCR's
    `pipeline.py::build_page_query` does), once; that answer is kept whatever it says (olmOCR
    v0.4.0 accepts its last attempt the same way). The page is turned here, in the stage that
    rendered it: its encoded image is still held by the request, no pixels cross a shuffle.
    The request keeps its temperature (olmOCR's attempt 1 uses 0.1, as attempt 0)."""
    if not policy.rotation_retry or entry.rotated or not isinstance(entry.key, PageRef):
        return None
    rotation = needs_rotation(policy.answer_format, result.text)
    if rotation is None:
        return None
    turned = rotate_page_image(entry.request.images[0], rotation)
    request = dataclasses.replace(entry.request, images=(turned,), rotation=rotation)
    return _Pending(entry.key, request, entry.attempt + 1, rotated=True, fallback=result)


class _InferUnits(beam.DoFn):
    def __init__(
        self,
        backend: InferenceBackend,
        render: RenderConfig,
        video: VideoConfig,
        ocr_prompt: Prompt,
        grounding_prompt: Prompt,
        policy: PagePolicy = DEFAULT_POLICY,
        coarse_prompt: Prompt | None = None,
        figures: FigureCropper | None = None,
        account: RunAccount | None = None,
    ) -> None:
        """`account`: where units, tokens and spend are counted, and `--max-cost`."""
        self._backend = backend
        self._policy = policy
        self._figures = figures  # --figures crop: crop from the page image right here
        self._account = account or RunAccount()
        self._render, self._video = render, video
        self._ocr_prompt, self._grounding_prompt = ocr_prompt, grounding_prompt
        self._coarse_prompt = coarse_prompt or grounding_prompt  # the coarse pass's
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
        self._units_done = Metrics.counter(NAMESPACE, "units_done")
        self._units_failed = Metrics.counter(NAMESPACE, "units_failed")
        self._tokens = Metrics.counter(NAMESPACE, "tokens")
        self._spend = Metrics.counter(NAMESPACE, "spend_nano_usd")
        self._pending = {}

    def _acquire(self) -> None:
        """The process's engine and helper pool, on this instance's first unit: a run (or a
        worker) that gets no units, e.g. a `--skip-existing` rerun with nothing new, never
        loads the model, starts a server or spawns helpers."""
        if self._engine is not None:
            return
        self._engine, self._loaded_here = acquire_engine(self._key, self.create_engine)
        self._pool, _ = acquire_engine(self._key + "/helpers", self.create_pool)
        self._feed = UnitFeed(self._pool, self._make)

    @property
    def engine_key(self) -> str:
        """The registry key of this stage's engine (a later stage sharing it uses it too)."""
        return self._key

    def create_engine(self) -> Engine:
        """The worker process's engine for this stage's backend (called once, through the
        registry), bounded in flight."""
        logger.info("loading %s engine for %s", self._backend.backend, self._backend.model_name)
        engine = self._backend.create_engine()
        max_bytes = self._render.max_inflight_mb * 1024 * 1024
        return InFlightBound(engine, max_requests=engine.capacity, max_bytes=max_bytes)

    def create_pool(self) -> HelperPool:
        """The worker process's helper pool (registry key `engine_key + "/helpers"`)."""
        workers = resolve_workers(self._render.workers)
        logger.info("rendering and decoding in %d helper processes", workers)
        return HelperPool(workers, max(self._render.max_memory_mb, self._video.max_memory_mb))

    @property
    def render_config(self) -> RenderConfig:
        return self._render

    def teardown(self) -> None:
        for future in self._pending:  # abandoned: not sent, or its answer not waited for
            future.cancel()
        self._pending = {}
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
            self._ended(page=item.stage == "render", failed=True)
            yield item
        elif isinstance(item, PageImage):
            self._rendered.inc()
            result = page_without_model(item, self._policy)
            yield (item.ref, result) if result else page_request(item, self._ocr_prompt)
        else:
            self._windows_decoded.inc()
            self._frames.inc(len(item.frames))
            grounding_pass = item.ref.grounding_pass.name
            Metrics.counter(NAMESPACE, f"video_frames.{grounding_pass}").inc(len(item.frames))
            Metrics.counter(NAMESPACE, f"video_calls.{grounding_pass}").inc()
            coarse = grounding_pass == "coarse"
            yield window_request(item, self._coarse_prompt if coarse else self._grounding_prompt)

    def process(self, unit):
        try:
            yield from self._process(unit)
        except RunAborted:  # Beam catches only Exception: tear down what this bundle started
            self.teardown()
            raise

    def _process(self, unit):
        self._acquire()
        if self._loaded_here:  # counted here: metrics from setup() are not reported
            Metrics.counter(NAMESPACE, "model_loads").inc()
            self._loaded_here = False
        if isinstance(unit, VideoWindow) and unit.grounding_pass.name == "refine":
            Metrics.counter(NAMESPACE, "units_planned").inc()  # planned after the coarse pass
            self._account.add(units_planned=1)
        if self._account.exhausted():  # --max-cost spent: not even rendered
            for failure in self._refused_unit(unit):
                yield dead_letter(failure)
        else:
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
                self._ended(page=True, failed=False)
                yield key, request
                continue
            yield from self._collect(keep=self._engine.capacity - 1)
            if self._account.exhausted():  # checked last, so no request goes out after it
                yield dead_letter(self._refused(key))
                continue
            self._submit(_Pending(key, request))
            yield from self._collect(keep=None)

    def _submit(self, entry: _Pending) -> None:
        self._pending[self._engine.submit(entry.request)] = entry

    def finish_bundle(self):
        try:
            yield from self._finish_bundle()
        except RunAborted:
            self.teardown()
            raise

    def _finish_bundle(self):
        if self._engine is None:  # no unit yet: nothing loaded, nothing to finish
            return
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
            stall = getattr(self._engine, "stall_timeout_s", None)
            since = time.monotonic()
            while len(self._pending) > keep:
                if drain:
                    self._engine.flush()
                done, _ = concurrent.futures.wait(
                    self._pending,
                    timeout=min(WAIT_POLL_S, stall or WAIT_POLL_S),
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
                if done:
                    since = time.monotonic()
                    yield from self._emit(done)
                    continue
                self._engine.check()  # e.g. another thread's requests all rejected: stop
                if stall is not None and time.monotonic() - since > stall:
                    yield from self._give_up(stall)
        yield from self._emit([f for f in self._pending if f.done()])

    def _give_up(self, stall: float):
        """No result at all for `stall` s: the engine is stuck. Open its breaker and fail what
        this instance waits for (a hung generate must not hold the bundle forever)."""
        reason = f"no result from the {self._backend.backend} engine for {stall:g} s"
        getattr(self._engine, "trip", lambda _r: None)(reason)
        for future, entry in list(self._pending.items()):
            future.cancel()
            del self._pending[future]
            Metrics.counter(NAMESPACE, "engine_unavailable").inc()
            yield dead_letter(entry.key.failure("inference", "EngineUnavailable", reason))

    def _emit(self, done):
        for future in done:
            entry = self._pending.pop(future)
            if future.cancelled():
                result = VLResult.failed(EngineUnavailable("the request was cancelled"))
            else:
                result = future.result()
            self._engine.check()  # e.g. every API request rejected: stop the run
            if result.error_type == EngineUnavailable.__name__:  # the breaker is open
                Metrics.counter(NAMESPACE, "engine_unavailable").inc()
            self._count_call(entry.request, result)
            if result.ok and entry.request.rotation:
                result = dataclasses.replace(result, rotation=entry.request.rotation)
            turn = rotation_retry(entry, result, self._policy) if result.ok else None
            if turn is not None:
                Metrics.counter(NAMESPACE, "model_retries.rotation").inc()
                self._submit(turn)
                continue
            if not result.ok and entry.fallback is not None:  # the turned page failed
                result = dataclasses.replace(entry.fallback, retries=entry.attempt)
            elif not result.ok and entry.best is not None:
                result = dataclasses.replace(entry.best[1], retries=entry.attempt)
            elif result.ok and self._policy.retry_degenerate and isinstance(entry.key, PageRef):
                result, retry = keep_or_retry(entry, result, self._policy.retry_degenerate)
                if retry is not None and self._account.exhausted():  # keep the best so far
                    result = dataclasses.replace(retry.best[1], retries=entry.attempt)
                elif retry is not None:
                    Metrics.counter(NAMESPACE, "model_retries").inc()
                    self._submit(retry)
                    continue
            self._ended(page=isinstance(entry.key, PageRef), failed=not result.ok)
            if result.ok:
                if entry.attempt > result.retries:  # e.g. a page re-sent turned
                    result = dataclasses.replace(result, retries=entry.attempt)
                if self._figures is not None and isinstance(entry.key, PageRef):
                    for row in self._figures.rows(entry.key, result, entry.request.images[0]):
                        yield beam.pvalue.TaggedOutput(FIGURES_TAG, row)
                yield entry.key, result
            else:
                yield dead_letter(
                    entry.key.failure("inference", result.error_type, result.error_message or "")
                )

    # -- progress and budget (transforms/run_ledger.py) ------------------------------------

    def _ended(self, page: bool, failed: bool) -> None:
        """A unit ended (a result or a failure): Beam counters and the run's ledger."""
        self._units_done.inc()
        if failed:
            self._units_failed.inc()
        self._account.add(units_done=1, units_failed=int(failed), pages_done=int(page),
                          windows_done=int(not page))  # fmt: skip

    def _count_call(self, request: VLRequest, result: VLResult) -> None:
        """One model call's tokens and spend (a server that reports no usage: the run's own
        count of what it sent, `vision_tokens`, and of the answer)."""
        if not result.ok:
            return
        tokens_in, tokens_out = result.input_tokens, result.output_tokens
        counter = self._account.counter
        if counter is not None and tokens_in is None:
            tokens_in = counter.request_tokens(request)
        if counter is not None and tokens_out is None:
            tokens_out = counter.text_tokens(result.text or "")
        tokens_in, tokens_out = tokens_in or 0, tokens_out or 0
        self._tokens.inc(tokens_in + tokens_out)
        self._spend.inc(self._account.spend(tokens_in, tokens_out))

    def _refused(self, key) -> Failure:
        """A made page or window not sent: the budget is spent."""
        self._ended(page=isinstance(key, PageRef), failed=True)
        self._account.add(budget_refused=1)
        return key.failure("inference", "BudgetExceeded", self._account.refusal())

    def _refused_unit(self, unit) -> Iterator[Failure]:
        """Every page of a range, or a window, not rendered nor sent: the budget is spent."""
        source, message = unit.source, self._account.refusal()
        units = unit.page_numbers if isinstance(unit, PageRange) else [unit.index]
        for number in units:
            self._ended(page=isinstance(unit, PageRange), failed=True)
            self._account.add(budget_refused=1)
            text = message
            if isinstance(unit, VideoWindow) and unit.grounding_pass.name != "dense":
                text = f"{unit.grounding_pass.name} window {unit.index}: {message}"
            yield Failure(
                source.uri, source.doc_id, "inference", "BudgetExceeded", text, number, source.meta
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

    @classmethod
    def sharing(cls, other: InferUnits) -> InferUnits:
        """The same stage applied again later in the job (the refine pass of coarse-to-fine
        grounding): its DoFn shares `other`'s engine key, so each worker process keeps one
        engine (one model load, one server) for both."""
        twin = cls.__new__(cls)
        beam.PTransform.__init__(twin)
        twin._fn = other._fn
        return twin

    @property
    def engine_stage(self) -> _InferUnits:
        """The DoFn owning the engine: a later stage (extraction) acquires the same engine
        through `acquire_engine(stage.engine_key, stage.create_engine)`."""
        return self._fn

    def expand(self, units):
        out = units | "RenderDecodeInfer" >> beam.ParDo(self._fn).with_outputs(
            FAILURES_TAG, FIGURES_TAG, main="results"
        )
        return {"results": out.results, "failures": out[FAILURES_TAG], "figures": out[FIGURES_TAG]}
