"""The `vlbeam run` job: ingest → split (pages, video windows) → Qwen3-VL → Parquet tables."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from vlbeam.outputs.layout import join, staging_dir, table_glob
from vlbeam.outputs.manifest import RunManifest
from vlbeam.outputs.publish import publish
from vlbeam.pipeline.budget import (
    account_for,
    check_budget_at_launch,
    finish_budget,
    start_progress,
)
from vlbeam.pipeline.options import (
    VlbeamOptions,
    api_config,
    extract_config,
    layout_config,
    model_config,
    page_policy,
    parse_tasks,
    refuse_unknown_flags,
    render_config,
    server_api_config,
    server_spec,
    video_config,
)
from vlbeam.pipeline.prompts import (
    coarse_prompt,
    extract_prompt,
    grounding_prompt,
    ocr_prompt,
    read_extract_schema,
    read_queries,
)
from vlbeam.pipeline.summary import counters, format_summary
from vlbeam.schemas import TABLES
from vlbeam.schemas.config import ExtractConfig, Prompt
from vlbeam.schemas.elements import PageRef, Provenance, VideoWindow
from vlbeam.schemas.errors import EngineUnavailable
from vlbeam.schemas.ids import new_run_id
from vlbeam.transforms.answers.extraction import ExtractSchema
from vlbeam.transforms.backends.engine import InferenceBackend
from vlbeam.transforms.coarse_to_fine import RefineFromCoarse
from vlbeam.transforms.documents import SummarizeDocuments
from vlbeam.transforms.extract import ExtractFields
from vlbeam.transforms.figures import FigureCropper
from vlbeam.transforms.grounding import GroundVideo
from vlbeam.transforms.inference import InferUnits, close_idle_engines
from vlbeam.transforms.ingest import IngestFiles
from vlbeam.transforms.layout import BLOCKS_TAG, LAYOUT_TAG, AssembleDocuments
from vlbeam.transforms.media.work_units import VideoConfig
from vlbeam.transforms.ocr import ToPageRows
from vlbeam.transforms.plan import PlanWork
from vlbeam.transforms.run_ledger import RunAccount
from vlbeam.transforms.write import WriteTable

logger = logging.getLogger(__name__)

DEFAULT_RUNNER = "FnApiRunner"  # in-process; never tries to download a runner binary


def _is_page(keyed) -> bool:
    return isinstance(keyed[0], PageRef)


def build_pipeline(
    p: beam.Pipeline,
    opts: VlbeamOptions,
    backend: InferenceBackend,
    run_id: str,
    account: RunAccount | None = None,
    extraction: ExtractionPlan | None = None,
) -> None:
    """Wire the whole job onto `p` (no I/O happens here, but reading --extract's schema when
    `extraction` is not given). `account`: the run's ledger and budget
    (`transforms/run_ledger.py`)."""
    extraction = extraction if extraction is not None else extraction_plan(opts)
    tasks = parse_tasks(opts.tasks)
    model = backend.model_name
    layout = layout_config(opts)
    ocr_p = ocr_prompt(opts.ocr_prompt_file, layout.ocr_format)
    queries = read_queries(opts.query, opts.queries_file)
    ground_p = grounding_prompt(opts.grounding_prompt_file, queries)
    video_cfg, render_cfg = grounding_video_config(video_config(opts), queries), render_config(opts)
    coarse_p = coarse_prompt(opts.coarse_prompt_file, queries)
    page_prov = Provenance(model, backend.backend, ocr_p.prompt_id, run_id, backend.provider)
    video_prov = Provenance(model, backend.backend, ground_p.prompt_id, run_id, backend.provider)
    staged = staging_dir(opts.output, run_id)

    def write(pcoll, table: str):
        return pcoll | f"Write_{table}" >> WriteTable(join(staged, table), TABLES[table])

    prompt_by_kind = {"pdf": ocr_p.prompt_id, "image": ocr_p.prompt_id,
                      "video": ground_p.prompt_id}  # fmt: skip
    done = done_documents(p, opts.output, model, backend.backend) if opts.skip_existing else None
    if done is not None and extraction is not None:  # done = OCR'd *and* extracted with it
        done = extracted_with(p, done, opts.output, extraction.schema.schema_id)
    patterns = p | "InputPatterns" >> beam.Create(list(opts.input))
    ingest = patterns | "Ingest" >> IngestFiles(tasks, prompt_by_kind, done)

    to_plan = (ingest["pdf"], ingest["image"], ingest["video"]) | "ToPlan" >> beam.Flatten()
    ledger = account.ledger if account is not None else None
    planned = to_plan | "Plan" >> PlanWork(render_cfg, video_cfg, ledger)
    policy = page_policy(opts)
    cropper = FigureCropper(layout, page_prov) if layout.figures == "crop" else None
    infer = InferUnits(
        backend, render_cfg, video_cfg, ocr_p, ground_p, policy, coarse_p, cropper, account=account
    )
    inferred = planned["units"] | "Infer" >> infer
    page_results, window_results = inferred["results"] | "ByTask" >> beam.Partition(
        lambda keyed, _n: 0 if _is_page(keyed) else 1, 2
    )
    page_out = page_results | "PageRows" >> beam.ParDo(
        ToPageRows(page_prov, policy, layout)
    ).with_outputs(BLOCKS_TAG, LAYOUT_TAG, main="pages")
    page_rows = page_out.pages
    coarse_prov = Provenance(model, backend.backend, coarse_p.prompt_id, run_id, backend.provider)
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

    extract_input = (
        planned["units"] if extraction and extraction.cfg.source == "images" else page_rows
    )
    extracted = extract_pass(p, extraction, infer, extract_input, backend, run_id)
    unit_failures.append(extracted["failures"])

    failures = (
        ingest["failures"],
        planned["failures"],
        *unit_failures,
    ) | "AllFailures" >> beam.Flatten()
    facts = (planned["facts"], ingest["skipped"]) | "AllFacts" >> beam.Flatten()
    ok_units = (
        page_rows | "OkPages" >> beam.Map(lambda row: row["source_uri"]),
        *ok_windows,
    ) | "AllOkUnits" >> beam.Flatten()
    provenance = {
        "pdf": vars_of(page_prov),
        "image": vars_of(page_prov),
        "video": vars_of(video_prov),
    }
    documents = (ingest["sources"], facts, ok_units, failures) | (
        "Documents" >> SummarizeDocuments(provenance, run_id)
    )

    write_document_tables(write, page_out, facts, failures, page_prov)
    write(inferred["figures"], "figures")
    write(documents, "documents")
    write(page_rows, "pages")
    write(window_rows | "AllWindowRows" >> beam.Flatten(), "video_windows")
    write(grounded["events"], "video_events")
    write(failures | "FailureRows" >> beam.Map(lambda f: f.to_row(run_id)), "failures")
    write(extracted["rows"], "extractions")


@dataclass(frozen=True)
class ExtractionPlan:
    """--extract, read and checked at launch: the schema, the instruction, the flags."""

    schema: ExtractSchema
    prompt: Prompt
    cfg: ExtractConfig


def extraction_plan(opts: VlbeamOptions) -> ExtractionPlan | None:
    """None without --extract; a bad schema or flag raises here (ValueError, one line)."""
    cfg = extract_config(opts)
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
    (WindowRef, VLResult), dict of the coarse pass's `windows` rows, `ok` uris and the refine
    pass's `failures`)."""
    coarse_windows = units | "CoarseWindows" >> beam.Filter(
        lambda unit: isinstance(unit, VideoWindow) and unit.grounding_pass.name == "coarse"
    )
    planned = (coarse_windows, coarse_results) | "PlanRefine" >> RefineFromCoarse(*plan_args)
    refined = planned["units"] | "InferRefine" >> InferUnits.sharing(infer)
    return refined["results"], {**planned, "failures": refined["failures"]}


def write_document_tables(write, page_out, facts, failures, prov: Provenance) -> None:
    """`blocks`, and each document's `document_text` and `tables` (assembled after inference
    from the pages' small layout records)."""
    write(page_out[BLOCKS_TAG], "blocks")
    assembled = (page_out[LAYOUT_TAG], facts, failures) | "AssembleDocuments" >> AssembleDocuments(
        prov
    )
    write(assembled["document_text"], "document_text")
    write(assembled["tables"], "tables")


def done_documents(p: beam.Pipeline, output: str, model: str, backend: str):
    """((doc_id, prompt_id), True) for every document an earlier run in `output` processed
    OK with this model and backend; None when there is no earlier output."""
    pattern = table_glob(output, "documents")
    if not FileSystems.match([pattern])[0].metadata_list:
        return None
    columns = ["doc_id", "status", "model", "backend", "prompt_id"]
    return (
        p
        | "ReadEarlierDocuments" >> beam.io.ReadFromParquet(pattern, columns=columns)
        | "DoneWithThisModel"
        >> beam.Filter(
            lambda r: r["status"] == "ok" and r["model"] == model and r["backend"] == backend
        )
        | "DoneKeys" >> beam.Map(lambda r: ((r["doc_id"], r["prompt_id"]), True))
        | "OncePerKey" >> beam.Distinct()
    )


def extracted_with(p: beam.Pipeline, done, output: str, schema_id: str):
    """--skip-existing with --extract: of the `done` documents, those an earlier run also
    extracted with this very schema (`schema_id` pins its hash: a changed schema
    re-extracts, which re-reads the document)."""
    pattern = table_glob(output, "extractions")
    if not FileSystems.match([pattern])[0].metadata_list:
        return p | "NothingExtractedBefore" >> beam.Create([])
    extracted = (
        p
        | "ReadEarlierExtractions"
        >> beam.io.ReadFromParquet(pattern, columns=["doc_id", "schema_id"])
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


def vars_of(prov: Provenance) -> dict:
    return {"model": prov.model, "backend": prov.backend, "prompt_id": prov.prompt_id}


def make_backend(opts: VlbeamOptions) -> InferenceBackend:
    """The backend, after the launcher-side checks that fail fast."""
    if opts.backend == "openai":
        from vlbeam.transforms.backends.openai_engine import preflight
        from vlbeam.transforms.backends.openai_handler import OpenAIApiHandler

        if opts.max_batch_size is not None:
            raise ValueError(
                "--max-batch-size sets the batch of a local model; the API backend sends each "
                "request on its own, up to --max-concurrency at once"
            )
        cfg = api_config(opts)
        if not opts.no_preflight:
            preflight(cfg)
        return OpenAIApiHandler(cfg)
    if opts.backend in ("vllm", "sglang"):
        from vlbeam.transforms.backends.managed_handler import ManagedServerHandler

        if opts.max_batch_size is not None:
            raise ValueError(
                f"--max-batch-size sets the batch of a local model; a {opts.backend} server "
                "batches continuously: bound it with --max-concurrency"
            )
        return ManagedServerHandler(
            opts.backend, server_spec(opts), server_api_config(opts), opts.model
        )
    from vlbeam.transforms.backends.qwen_transformers import (
        TransformersQwenHandler,
        check_model_available,
    )

    check_model_available(opts.model)
    return TransformersQwenHandler(model_config(opts))


def run(
    argv: list[str] | None = None,
    test_pipeline: beam.Pipeline | None = None,
    *,
    model_handler: InferenceBackend | None = None,
) -> PipelineResult:
    """Run the job and publish its tables. `model_handler` replaces the backend (tests)."""
    refuse_unknown_flags(sys.argv[1:] if argv is None else argv)  # a typo never runs
    options = PipelineOptions(argv)
    opts = options.view_as(VlbeamOptions)
    if not opts.input or not opts.output:
        raise SystemExit("vlbeam run: --input and --output are required")
    standard = options.view_as(StandardOptions)
    if test_pipeline is None and not standard.runner:
        standard.runner = DEFAULT_RUNNER
    run_id = opts.run_id or new_run_id()
    plan = check_budget_at_launch(opts)  # --max-cost: refuse before any work (None without)

    extraction = extraction_plan(opts)  # a bad --extract schema fails before any work
    if model_handler is None:
        model_handler = make_backend(opts)

    mode = "append" if opts.skip_existing else opts.output_mode
    p = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    account = account_for(opts, standard.runner, run_id)
    build_pipeline(p, opts, model_handler, run_id, account, extraction)
    manifest = RunManifest(run_id, opts, options)
    manifest.start(opts.output, plan.totals() if plan is not None else None)
    logger.info("vlbeam run %s: %s -> %s", run_id, ", ".join(opts.input), opts.output)
    display = start_progress(opts, account)
    try:
        try:
            result = p.run()
            state = result.wait_until_finish()
        finally:
            close_idle_engines()  # in-process runners: nothing outlives the run
            live = display.stop() if display is not None else None
        if state not in (PipelineState.DONE, None):
            raise RuntimeError(f"pipeline ended in state {state}; previous output left in place")
        publish(opts.output, run_id, TABLES, mode)
    except BaseException as exc:
        manifest.finish(opts.output, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    values = counters(result)
    manifest.finish(opts.output, "succeeded", counts=values)
    print(format_summary(values, manifest.wall_s, opts.output, run_id))
    refuse_if_engine_unavailable(values)
    finish_budget(account, live)  # raises BudgetExceeded when units were not sent
    return result


def refuse_if_engine_unavailable(values: dict) -> None:
    """After publishing: a run in which an engine's breaker opened (its units failed fast as
    `EngineUnavailable`) did not do its work; it ends with one message and a non-zero exit
    (`vlbeam run` exits 3), whatever the other failures."""
    count = int(values.get("engine_unavailable", 0) or 0)
    if count:
        raise EngineUnavailable(
            f"the engine could not serve: {count} unit(s) failed as EngineUnavailable "
            "(see failures.message and the worker log); what was done is published"
        )
