"""`vlbeam.Process`: the whole job as one composite transform, inputs → one PCollection per
output table. `vlbeam run` is this transform followed by `WriteTables` and `publish`
(`pipeline/run.py`); a caller's own pipeline applies it to its own PCollection of inputs.

Inputs are file URIs (`str`) or mappings with a `uri` key, whose other keys are carried to
every row made from that file as `meta` (`schemas/meta.py`). Settings' `--input` patterns and
`--input-manifest` files are read too, so `p | Process([...flags...])` alone is a job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import PBegin, PCollection

from vlbeam.outputs.layout import committed_view
from vlbeam.pipeline.prompts import (
    coarse_prompt,
    extract_prompt,
    grounding_prompt,
    ocr_prompt,
    read_extract_schema,
    read_queries,
)
from vlbeam.pipeline.settings import Settings, make_backend
from vlbeam.schemas.config import ExtractConfig, Prompt
from vlbeam.schemas.elements import PageRef, Provenance, VideoWindow
from vlbeam.schemas.ids import new_run_id
from vlbeam.schemas.meta import normalize_meta
from vlbeam.schemas.presets import model_preset
from vlbeam.transforms.answers.extraction import ExtractSchema
from vlbeam.transforms.backends.engine import InferenceBackend
from vlbeam.transforms.coarse_to_fine import RefineFromCoarse
from vlbeam.transforms.documents import SummarizeDocuments
from vlbeam.transforms.extract import ExtractFields
from vlbeam.transforms.figures import FigureCropper
from vlbeam.transforms.grounding import GroundVideo
from vlbeam.transforms.inference import InferUnits
from vlbeam.transforms.ingest import IngestFiles, MatchPatterns, ToInputFiles
from vlbeam.transforms.input_manifest import ReadManifests, manifest_columns
from vlbeam.transforms.layout import BLOCKS_TAG, LAYOUT_TAG, AssembleDocuments
from vlbeam.transforms.media.work_units import VideoConfig
from vlbeam.transforms.ocr import ToPageRows
from vlbeam.transforms.plan import PlanWork
from vlbeam.transforms.rows import ToRows
from vlbeam.transforms.run_ledger import RunAccount

logger = logging.getLogger(__name__)


class ProcessResult(dict):
    """What `Process` returns: one PCollection per output table, as attributes and as a
    dict keyed by table name (`schemas.TABLES`, in the same order), plus the `run_id`
    stamped on every row. Each element is a dict with the table's columns (or, with
    `as_rows=True`, a row of `vlbeam.row_type(table)`). A new table is one line here (and
    its schema in `schemas.TABLES`; a test keeps the two the same)."""

    documents: PCollection
    pages: PCollection
    video_windows: PCollection
    video_events: PCollection
    failures: PCollection
    blocks: PCollection
    tables: PCollection
    figures: PCollection
    document_text: PCollection
    extractions: PCollection
    run_id: str

    def __getattr__(self, name: str) -> PCollection:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no table {name!r}; tables are {list(self)}") from None


def _is_page(keyed) -> bool:
    return isinstance(keyed[0], PageRef)


def _ok_page_key(row: dict) -> tuple:
    return row["source_uri"], normalize_meta(row["meta"])


def _vars_of(prov: Provenance) -> dict:
    return {"model": prov.model, "backend": prov.backend, "prompt_id": prov.prompt_id}


def done_documents(p: beam.Pipeline, output: str, model: str, backend: str):
    """((doc_id, prompt_id), True) for every document an earlier committed run in `output`
    processed OK with this model and backend; None when there is no earlier output."""
    committed = committed_view(output, ["documents"]).files("documents")
    if not committed:
        return None
    columns = ["doc_id", "status", "model", "backend", "prompt_id"]
    return (
        p
        | "EarlierDocumentFiles" >> beam.Create(committed)
        | "ReadEarlierDocuments" >> beam.io.ReadAllFromParquet(columns=columns)
        | "DoneWithThisModel"
        >> beam.Filter(
            lambda r: r["status"] == "ok" and r["model"] == model and r["backend"] == backend
        )
        | "DoneKeys" >> beam.Map(lambda r: ((r["doc_id"], r["prompt_id"]), True))
        | "OncePerKey" >> beam.Distinct()
    )


def grounding_video_config(cfg: VideoConfig, queries: list[str]) -> VideoConfig:
    """The video config the job runs with: the event timeline (no queries) stays dense."""
    if cfg.strategy.coarse_to_fine and not queries:
        logger.warning(
            "--grounding-strategy coarse-to-fine grounds queries (--query, --queries-file); "
            "without any, the event timeline is grounded densely"
        )
        return cfg.dense()
    return cfg


def refine_pass(units, coarse_results, infer: InferUnits, plan_args: tuple):
    """Coarse-to-fine: the coarse pass's answers → refine windows → the same inference
    stage again (sharing its engine: one per worker process). Returns (the refine pass's
    (WindowRef, VLResult), dict of the coarse pass's `windows` rows, `ok` inputs and the
    refine pass's `failures`)."""
    coarse_windows = units | "CoarseWindows" >> beam.Filter(
        lambda unit: isinstance(unit, VideoWindow) and unit.grounding_pass.name == "coarse"
    )
    planned = (coarse_windows, coarse_results) | "PlanRefine" >> RefineFromCoarse(*plan_args)
    refined = planned["units"] | "InferRefine" >> InferUnits.sharing(infer)
    return refined["results"], {**planned, "failures": refined["failures"]}


@dataclass(frozen=True)
class ExtractionPlan:
    """--extract, read and checked at launch: the schema, the instruction, the flags."""

    schema: ExtractSchema
    prompt: Prompt
    cfg: ExtractConfig


def extraction_plan(cfg: ExtractConfig) -> ExtractionPlan | None:
    """None without --extract; a bad schema or flag raises here (ValueError, one line)."""
    if cfg.schema_path is None:
        if cfg.prompt_file:
            raise ValueError("--extract-prompt-file needs --extract SCHEMA.json")
        return None
    schema = read_extract_schema(cfg.schema_path)
    return ExtractionPlan(schema, extract_prompt(cfg.prompt_file), cfg)


def extract_pass(p, plan: ExtractionPlan | None, infer: InferUnits, inputs, backend, run_id):
    """--extract: `pages` rows (or, from images, the planned page ranges) → dict of `rows`
    (the extractions table) and `failures`, through the OCR stage's engine and helper
    processes; without --extract, both empty."""
    if plan is None:
        empty = p | "NoExtractions" >> beam.Create([])
        return {"rows": empty, "failures": p | "NoExtractionFailures" >> beam.Create([])}
    prov = Provenance(
        backend.model_name, backend.backend, plan.prompt.prompt_id, run_id, backend.provider
    )
    guided = getattr(backend, "guided", "none")
    return inputs | "Extract" >> ExtractFields(
        infer.engine_stage, plan.schema, plan.prompt, plan.cfg, prov, guided
    )


def extracted_with(p: beam.Pipeline, done, output: str, schema_id: str):
    """--skip-existing with --extract: of the `done` documents, those an earlier run also
    extracted with this very schema (`schema_id` pins its hash: a changed schema
    re-extracts, which re-reads the document)."""
    committed = committed_view(output, ["extractions"]).files("extractions")
    if not committed:
        return p | "NothingExtractedBefore" >> beam.Create([])
    extracted = (
        p
        | "EarlierExtractionFiles" >> beam.Create(committed)
        | "ReadEarlierExtractions" >> beam.io.ReadAllFromParquet(columns=["doc_id", "schema_id"])
        | "WithThisSchema" >> beam.Filter(lambda r: r["schema_id"] == schema_id)
        | "ExtractedDocs" >> beam.Map(lambda r: (r["doc_id"], "extracted"))
    )
    by_doc = done | "DoneByDoc" >> beam.Map(lambda kv: (kv[0][0], kv[0]))
    return (
        (by_doc, extracted)
        | "DoneAndExtracted" >> beam.Flatten()
        | "GroupDoneByDoc" >> beam.GroupByKey()
        | "BothDone" >> beam.FlatMap(_done_and_extracted)
    )


def _done_and_extracted(grouped):
    _doc, values = grouped
    values = list(values)
    if "extracted" in values:
        for key in dict.fromkeys(v for v in values if v != "extracted"):
            yield key, True


class Process(beam.PTransform):
    """Inputs → `ProcessResult` (one PCollection per output table).

        results = uris | vlbeam.Process(["--tasks", "ocr", "--model", "tiny-random"])
        results.pages | beam.Map(print)

    `settings`: the flag strings `vlbeam run` takes, or a `Settings`; keyword configs
    (`job=JobConfig(...)`, `model=ModelConfig(...)`, `api=ApiConfig(...)`, ...) replace its
    parts. `backend`: an engine to use instead of the one the settings name. `run_id`:
    stamped on every row (default: the settings' `--run-id`, else a new one). `as_rows`:
    schema'd rows (`vlbeam.row_type(table)`) instead of dicts. `account`: the run's ledger
    and budget (`transforms/run_ledger.RunAccount`), which `vlbeam run` makes for
    `--max-cost` and progress (`pipeline/budget.py`); default: units are counted in Beam
    metrics only, with no budget.

    Applied to a pipeline (`p | Process(...)`) it reads the settings' `--input` patterns and
    `--input-manifest` files; applied to a PCollection of inputs, those too.
    """

    def __init__(
        self,
        settings: Sequence[str] | Settings = (),
        *,
        backend: InferenceBackend | None = None,
        run_id: str | None = None,
        as_rows: bool = False,
        account: RunAccount | None = None,
        **configs: Any,
    ) -> None:
        super().__init__()
        if isinstance(settings, str):
            raise TypeError("settings: a list of flag strings, e.g. ['--tasks', 'ocr']")
        if not isinstance(settings, Settings):
            settings = Settings.from_flags(settings)
        self.settings = settings.replace(**configs) if configs else settings
        self.run_id = run_id or self.settings.job.run_id or new_run_id()
        self._backend = backend
        self._as_rows = as_rows
        self.account = account  # may be set until the transform is applied
        for path in self.settings.job.input_manifest:  # a wrong manifest stops here
            manifest_columns(path)
        self.extraction = extraction_plan(self.settings.extract)  # a bad schema stops here

    def expand(self, inputs) -> ProcessResult:
        job = self.settings.job
        p = inputs.pipeline
        backend = self._backend if self._backend is not None else make_backend(self.settings)
        tasks = job.task_set
        model = backend.model_name
        layout = self.settings.layout
        ocr_p = ocr_prompt(
            job.ocr_prompt_file, layout.ocr_format, preset=model_preset(job.model_preset)
        )
        queries = read_queries(list(job.query), job.queries_file)
        ground_p = grounding_prompt(job.grounding_prompt_file, queries)
        video_cfg = grounding_video_config(self.settings.video, queries)
        render_cfg = self.settings.render
        coarse_p = coarse_prompt(job.coarse_prompt_file, queries)
        policy = self.settings.policy
        run_id = self.run_id
        page_prov = Provenance(model, backend.backend, ocr_p.prompt_id, run_id, backend.provider)
        video_prov = Provenance(
            model, backend.backend, ground_p.prompt_id, run_id, backend.provider
        )
        prompt_by_kind = {"pdf": ocr_p.prompt_id, "image": ocr_p.prompt_id,
                          "video": ground_p.prompt_id}  # fmt: skip

        files, early_failures = self._inputs(p, inputs)
        done = None
        if job.skip_existing:
            if not job.output:
                raise ValueError("skip_existing needs the output folder (--output) to read")
            done = done_documents(p, job.output, model, backend.backend)
            if done is not None and self.extraction is not None:  # OCR'd *and* extracted
                done = extracted_with(p, done, job.output, self.extraction.schema.schema_id)
        ingest = files | "Ingest" >> IngestFiles(tasks, prompt_by_kind, done)

        to_plan = (ingest["pdf"], ingest["image"], ingest["video"]) | "ToPlan" >> beam.Flatten()
        account = self.account
        ledger = account.ledger if account is not None else None
        planned = to_plan | "Plan" >> PlanWork(render_cfg, video_cfg, ledger)
        cropper = FigureCropper(layout, page_prov) if layout.figures == "crop" else None
        infer = InferUnits(
            backend, render_cfg, video_cfg, ocr_p, ground_p, policy, coarse_p, cropper,
            account=account,
        )  # fmt: skip
        inferred = planned["units"] | "Infer" >> infer
        page_results, window_results = inferred["results"] | "ByTask" >> beam.Partition(
            lambda keyed, _n: 0 if _is_page(keyed) else 1, 2
        )
        page_out = page_results | "PageRows" >> beam.ParDo(
            ToPageRows(page_prov, policy, layout)
        ).with_outputs(BLOCKS_TAG, LAYOUT_TAG, main="pages")
        page_rows = page_out.pages
        coarse_prov = Provenance(
            model, backend.backend, coarse_p.prompt_id, run_id, backend.provider
        )
        if video_cfg.strategy.coarse_to_fine:
            window_results, coarse = refine_pass(
                planned["units"], window_results, infer, (coarse_prov, queries, video_cfg)
            )
        grounded = window_results | "Grounding" >> GroundVideo(
            video_prov, queries, gap_s=1.0 / video_cfg.sampling.fps
        )
        window_rows, ok_windows = [grounded["windows"]], [grounded["ok"]]
        unit_failures = [inferred["failures"], grounded["failures"]]
        if video_cfg.strategy.coarse_to_fine:
            window_rows.append(coarse["windows"])
            ok_windows.append(coarse["ok"])
            unit_failures.append(coarse["failures"])
        extraction = self.extraction
        extract_input = (
            planned["units"] if extraction and extraction.cfg.source == "images" else page_rows
        )
        extracted = extract_pass(p, extraction, infer, extract_input, backend, run_id)
        unit_failures.append(extracted["failures"])
        failures = (
            *early_failures,
            ingest["failures"],
            planned["failures"],
            *unit_failures,
        ) | "AllFailures" >> beam.Flatten()
        facts = (planned["facts"], ingest["skipped"]) | "AllFacts" >> beam.Flatten()
        ok_units = (
            page_rows | "OkPages" >> beam.Map(_ok_page_key),
            *ok_windows,
        ) | "AllOkUnits" >> beam.Flatten()
        provenance = {
            "pdf": _vars_of(page_prov),
            "image": _vars_of(page_prov),
            "video": _vars_of(video_prov),
        }
        documents = (ingest["sources"], facts, ok_units, failures) | (
            "Documents" >> SummarizeDocuments(provenance, run_id)
        )
        assembled = (page_out[LAYOUT_TAG], facts, failures) | (
            "AssembleDocuments" >> AssembleDocuments(page_prov)
        )
        tables = {
            "documents": documents,
            "pages": page_rows,
            "video_windows": window_rows | "AllWindowRows" >> beam.Flatten(),
            "video_events": grounded["events"],
            "failures": failures | "FailureRows" >> beam.Map(lambda f: f.to_row(run_id)),
            "blocks": page_out[BLOCKS_TAG],
            "tables": assembled["tables"],
            "figures": inferred["figures"],
            "document_text": assembled["document_text"],
            "extractions": extracted["rows"],
        }
        return self._result(tables)

    def _inputs(self, p: beam.Pipeline, inputs) -> tuple[PCollection, list[PCollection]]:
        """Every input as an `InputFile`, and the failures of inputs that name no file."""
        job = self.settings.job
        elements: list[PCollection] = []
        failures: list[PCollection] = []
        files: list[PCollection] = []
        if not isinstance(inputs, PBegin):
            elements.append(inputs)
        if job.input_manifest:
            elements.append(p | "InputManifests" >> ReadManifests(list(job.input_manifest)))
        if job.input:
            matched = (
                p
                | "InputPatterns" >> beam.Create(list(job.input))
                | "MatchPatterns" >> MatchPatterns()
            )
            files.append(matched["inputs"])
            failures.append(matched["failures"])
        if elements:
            given = (
                tuple(elements) | "CallerInputs" >> beam.Flatten()
                if len(elements) > 1
                else elements[0]
            ) | "ToInputFiles" >> ToInputFiles()
            files.append(given["inputs"])
            failures.append(given["failures"])
        if not files:
            raise ValueError(
                "no inputs: apply Process to a PCollection of URIs, or give --input / "
                "--input-manifest"
            )
        return tuple(files) | "AllInputs" >> beam.Flatten(), failures

    def _result(self, tables: dict[str, PCollection]) -> ProcessResult:
        from vlbeam.schemas import TABLES

        missing = set(TABLES) ^ set(tables)
        if missing:  # a table registered in schemas.TABLES that the job doesn't make
            raise RuntimeError(f"tables and schemas.TABLES differ: {sorted(missing)}")
        if self._as_rows:
            tables = {name: rows | f"{name}AsRows" >> ToRows(name) for name, rows in tables.items()}
        result = ProcessResult((name, tables[name]) for name in TABLES)
        result.run_id = self.run_id
        return result
