"""`--extract SCHEMA.json`: OCR text (or page images) → one `extractions` row per document or
page, after OCR, through the same engine as OCR.

Text assembly groups the small `pages` rows by document (never pixels) into `ExtractUnit`s.
The extraction stage acquires the OCR stage's engine from the per-process registry
(`transforms.engine_registry.acquire_engine` with the OCR stage's key), so a local model loads once
and a managed server or API connection pool is shared, under the same concurrency limits.

Per unit: the prompt (instruction + schema + text) is sent with the schema on the request
(`VLRequest.json_schema`: the backend constrains decoding where it can); the answer is
validated with `jsonschema`; an invalid one is asked again up to `--extract-retries` times
with the validator's errors in the prompt. A text longer than `--extract-chunk-chars` is
extracted chunk by chunk (split at page boundaries) and merged (`answers.extraction.
merge_chunks`: arrays concatenated, scalars first non-null, the chunk of each recorded in
`field_chunks`), then validated again: never silently truncated. An answer that never
validates is still a row (`valid = false`, the raw text kept); a request that fails is a
`failures` row (stage `extract`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.config import ExtractConfig, Prompt
from vlbeam.schemas.elements import (
    Failure,
    PageImage,
    PageRange,
    Provenance,
    VLRequest,
    VLResult,
)
from vlbeam.schemas.errors import TooManyPages
from vlbeam.schemas.meta import Meta, meta_column
from vlbeam.transforms.answers.extraction import (
    ExtractSchema,
    canonical_json,
    extraction_prompt,
    merge_chunks,
    read_answer,
    split_text,
)
from vlbeam.transforms.dead_letter import FAILURES_TAG, NAMESPACE, dead_letter
from vlbeam.transforms.document_pages import PageRenderer
from vlbeam.transforms.engine_registry import acquire_engine, release_engine
from vlbeam.transforms.helper_pool import UnitFeed
from vlbeam.transforms.model_call import count_usage, model_call_columns

logger = logging.getLogger(__name__)

STAGE = "extract"
WAIT_S = 3600.0  # one extraction call's bound beyond the engine's own timeouts


def _meta(row: dict) -> Meta:
    """A `pages` row's `meta` column back as carried keys (sorted pairs)."""
    meta = row.get("meta")
    return tuple(sorted(meta.items())) if meta else None


@dataclass(frozen=True)
class ExtractUnit:
    """One document's (or page's) OCR text, pages in order."""

    doc_id: str
    source_uri: str
    page_number: int | None  # None: the whole document
    texts: tuple[str, ...] = field(default=())
    pages: PageRange | None = None  # --extract-from images: the pages to render and send
    meta: Meta = None  # the input's carried keys

    def failure(self, error_type: str, message: str) -> Failure:
        return Failure(
            self.source_uri, self.doc_id, STAGE, error_type, message, self.page_number, self.meta
        )


def units_from_pages(grouped, scope: str):
    """(source_uri, [pages rows]) → ExtractUnit(s): the document's page texts in page order
    (`scope` document), or one unit per page."""
    _uri, rows = grouped
    rows = sorted(rows, key=lambda r: r["page_number"])
    if scope == "page":
        for r in rows:
            yield ExtractUnit(
                r["doc_id"], r["source_uri"], r["page_number"], (r["text"] or "",), meta=_meta(r)
            )
        return
    first = rows[0]
    yield ExtractUnit(
        first["doc_id"],
        first["source_uri"],
        None,
        tuple(r["text"] or "" for r in rows),
        meta=_meta(first),
    )


def units_from_ranges(grouped, scope: str, max_pages: int):
    """--extract-from images: (source_uri, [PageRange]) → ExtractUnit(s) carrying the pages to
    render (work descriptors, not pixels), or a failure for a document over `max_pages`."""
    _uri, ranges = grouped
    ranges = sorted(ranges, key=lambda r: r.first_page)
    first = ranges[0]
    source, num_pages = first.source, first.num_pages
    if scope == "page":
        for n in range(1, num_pages + 1):
            one = PageRange(source, n, n, num_pages)
            yield ExtractUnit(source.doc_id, source.uri, n, pages=one, meta=source.meta)
        return
    if num_pages > max_pages:
        Metrics.counter(NAMESPACE, "extractions_failed").inc()
        why = TooManyPages(
            f"{num_pages} pages: --extract-from images sends at most --extract-max-pages "
            f"{max_pages} (use --extract-from text or --extract-scope page)"
        )
        yield dead_letter(
            Failure.from_exception(
                why, source_uri=source.uri, doc_id=source.doc_id, stage=STAGE, meta=source.meta
            )
        )
        return
    pages = PageRange(source, 1, num_pages, num_pages)
    yield ExtractUnit(source.doc_id, source.uri, None, pages=pages, meta=source.meta)


def page_text_entry(row: dict) -> tuple[str, dict]:
    """A `pages` row → (its document, the few fields assembly needs): text, not pixels."""
    keep = {k: row.get(k) for k in ("doc_id", "source_uri", "page_number", "text", "meta")}
    return row["doc_id"], keep  # doc_id: the same file with other carried keys is another


@dataclass
class _Usage:
    """Model-call provenance summed over a unit's calls (attempts and chunks)."""

    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float | None = None
    last: VLResult | None = None

    def add(self, result: VLResult) -> None:
        self.input_tokens += result.input_tokens or 0
        self.output_tokens += result.output_tokens or 0
        self.latency_s += result.latency_s or 0.0
        if result.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + result.cost_usd
        self.last = result
        count_usage(result)

    def result(self) -> VLResult:
        last = self.last or VLResult(text=None)
        return VLResult(
            text=last.text,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            finish_reason=last.finish_reason,
            latency_s=self.latency_s,
            reasoning=last.reasoning,
            served_model=last.served_model,
            request_id=last.request_id,
            cost_usd=self.cost_usd,
        )


class _RequestFailed(Exception):
    def __init__(self, result: VLResult) -> None:
        super().__init__(result.error_message or "")
        self.result = result


class _Extract(beam.DoFn):
    """ExtractUnit → an `extractions` row, or a failure (tagged)."""

    def __init__(
        self,
        engine_stage,
        schema: ExtractSchema,
        prompt: Prompt,
        cfg: ExtractConfig,
        prov: Provenance,
        guided: str,
    ) -> None:
        self._stage = engine_stage  # the OCR stage's DoFn: its engine key and factory
        self._schema, self._prompt, self._cfg = schema, prompt, cfg
        self._prov, self._guided = prov, guided
        self._engine = None
        self._pool = None
        self._key: str | None = None

    def setup(self) -> None:
        self._key = self._stage.engine_key

    def _acquire(self) -> None:
        """The shared engine (and helpers), on this instance's first unit: a run with nothing
        to extract never loads the model or starts a server for it."""
        if self._engine is not None:
            return
        self._engine, _ = acquire_engine(self._key, self._stage.create_engine)
        if self._cfg.source == "images":  # the OCR stage's helper processes render again
            self._pool, _ = acquire_engine(self._key + "/helpers", self._stage.create_pool)
            self._renderer = PageRenderer(self._stage.render_config, counted=False)

    def teardown(self) -> None:
        if self._engine is not None:
            self._engine = None
            release_engine(self._key)
        if self._pool is not None:
            self._pool = None
            release_engine(self._key + "/helpers")

    def _images(self, unit: ExtractUnit) -> tuple[bytes, ...]:
        """The unit's pages rendered (as OCR renders them), in order; a page that fails to
        render fails the extraction."""
        feed = UnitFeed(self._pool, self._renderer.pages)
        made = [*feed.put(unit.pages), *feed.drain()]
        failed = [m for m in made if isinstance(m, Failure)]
        if failed:  # keeps the render failure's type (RenderTimeout, InvalidPdf, ...)
            first = failed[0]
            raise _RequestFailed(
                VLResult(text=None, error_type=first.error_type, error_message=first.message)
            )
        pages = sorted((m for m in made if isinstance(m, PageImage)),
                       key=lambda m: m.ref.page_number)  # fmt: skip
        return tuple(page.image for page in pages)

    def _call(self, prompt: str, usage: _Usage) -> VLResult:
        images = self._current_images
        request = VLRequest(images=images, prompt=prompt, json_schema=self._schema.text)
        future = self._engine.submit(request)
        self._engine.flush()  # a batching engine: don't wait for a full batch
        result = future.result(timeout=WAIT_S)
        if not result.ok:
            raise _RequestFailed(result)
        usage.add(result)
        return result

    def _ask(self, text: str | None, chunk: tuple[int, int], usage: _Usage) -> tuple:
        """One chunk: (value or None, raw text, errors, attempts)."""
        errors: list[str] = []
        raw: str | None = None
        value = None
        attempts = 0
        for attempt in range(self._cfg.retries + 1):
            attempts = attempt + 1
            prompt = extraction_prompt(
                self._prompt.text, self._schema.text, text,
                errors=errors or None, previous=raw, chunk=chunk,
            )  # fmt: skip
            result = self._call(prompt, usage)
            raw = result.text
            value, errors = read_answer(self._schema.text, raw)
            if result.finish_reason == "length" and errors:
                errors = [*errors, "(answer cut off at --max-new-tokens)"]
            if not errors:
                break
            if attempt < self._cfg.retries:
                Metrics.counter(NAMESPACE, "extraction_retries").inc()
        return value, raw, errors, attempts

    def process(self, unit: ExtractUnit):
        self._acquire()
        usage = _Usage()
        self._current_images: tuple[bytes, ...] = ()
        chunks: list[str | None] = [None]  # images: the pages are the document
        try:
            if unit.pages is not None:
                self._current_images = self._images(unit)
            else:
                chunks = split_text(list(unit.texts), self._cfg.chunk_chars)
            answers = [self._ask(text, (i, len(chunks)), usage) for i, text in enumerate(chunks)]
        except _RequestFailed as exc:
            Metrics.counter(NAMESPACE, "extractions_failed").inc()
            failed = exc.result
            message = failed.error_message or ""
            yield dead_letter(unit.failure(failed.error_type or "Error", message))
            return
        attempts = sum(a[3] for a in answers)
        field_chunks = None
        if len(answers) == 1:
            value, raw, errors, _ = answers[0]
            text = canonical_json(value) if not errors else raw
        else:
            value, sources = merge_chunks([a[0] for a in answers])
            chunk_errors = [f"chunk {i}: {e}" for i, a in enumerate(answers) for e in a[2]]
            _, merged_errors = read_answer(self._schema.text, canonical_json(value))
            errors = merged_errors + (chunk_errors if merged_errors else [])
            text = canonical_json(value)
            field_chunks = json.dumps(sources, sort_keys=True)
        valid = not errors
        Metrics.counter(NAMESPACE, "extractions_valid" if valid else "extractions_invalid").inc()
        yield {
            "doc_id": unit.doc_id,
            "source_uri": unit.source_uri,
            "scope": "page" if unit.page_number is not None else "document",
            "page_number": unit.page_number,
            "schema_id": self._schema.schema_id,
            "json": text,
            "valid": valid,
            "errors": errors,
            "attempts": attempts,
            "guided": self._guided,
            "extract_from": self._cfg.source,
            "chunks": len(chunks),
            "field_chunks": field_chunks,
            "model": self._prov.model,
            "backend": self._prov.backend,
            "prompt_id": self._prov.prompt_id,
            **model_call_columns(usage.result(), self._prov),
            "run_id": self._prov.run_id,
            "meta": meta_column(unit.meta),
        }


class ExtractFields(beam.PTransform):
    """`pages` rows (`--extract-from text`) or the planned `PageRange`s (`images`) → dict of
    `rows` (extractions) and `failures`, through `engine_stage`'s engine (the OCR stage's:
    `InferUnits.engine_stage`)."""

    def __init__(self, engine_stage, schema, prompt, cfg: ExtractConfig, prov, guided) -> None:
        super().__init__()
        self._cfg = cfg
        self._fn = _Extract(engine_stage, schema, prompt, cfg, prov, guided)

    def expand(self, inputs):
        too_long = None
        if self._cfg.source == "images":
            made = (
                inputs
                | "PageRanges" >> beam.Filter(lambda unit: isinstance(unit, PageRange))
                | "RangesByDocument" >> beam.Map(lambda r: (r.source.doc_id, r))
                | "GroupRanges" >> beam.GroupByKey()
                | "ImageUnits"
                >> beam.FlatMap(
                    units_from_ranges, self._cfg.scope, self._cfg.max_pages
                ).with_outputs(FAILURES_TAG, main="units")
            )
            units, too_long = made.units, made[FAILURES_TAG]
        else:
            units = (
                inputs
                | "PageTexts" >> beam.Map(page_text_entry)
                | "TextsByDocument" >> beam.GroupByKey()
                | "ExtractUnits" >> beam.FlatMap(units_from_pages, self._cfg.scope)
            )
        out = units | "AskForFields" >> beam.ParDo(self._fn).with_outputs(FAILURES_TAG, main="rows")
        failures = out[FAILURES_TAG]
        if too_long is not None:
            failures = (failures, too_long) | "AllExtractFailures" >> beam.Flatten()
        return {"rows": out.rows, "failures": failures}
