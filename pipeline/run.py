"""The `vlbeam run` job: ingest → split → OCR → Parquet tables."""

from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from vlbeam.pipeline.elements import Provenance
from vlbeam.pipeline.ids import new_run_id
from vlbeam.pipeline.options import (
    VlbeamOptions,
    model_config,
    parse_tasks,
    render_config,
)
from vlbeam.pipeline.output import join, publish, staging_dir
from vlbeam.pipeline.prompts import ocr_prompt
from vlbeam.pipeline.summary import counters, format_summary
from vlbeam.schemas import DOCUMENTS, FAILURES, PAGES, TABLES
from vlbeam.transforms.documents import SummarizeDocuments
from vlbeam.transforms.ingest import IngestFiles
from vlbeam.transforms.ocr import OcrPages
from vlbeam.transforms.split_pages import SplitPages
from vlbeam.transforms.write import WriteTable

logger = logging.getLogger(__name__)

DEFAULT_RUNNER = "FnApiRunner"  # in-process; never tries to download a runner binary


def build_pipeline(p: beam.Pipeline, opts: VlbeamOptions, handler: ModelHandler, run_id: str):
    """Wire the whole job onto `p` (no I/O happens here)."""
    tasks = parse_tasks(opts.tasks)
    render_cfg = render_config(opts)
    prompt = ocr_prompt(opts.ocr_prompt_file)
    prov = Provenance(
        model=opts.model,
        backend=getattr(handler, "backend", "custom"),
        prompt_id=prompt.prompt_id,
        run_id=run_id,
    )
    staged = staging_dir(opts.output, run_id)

    patterns = p | "InputPatterns" >> beam.Create(list(opts.input))
    ingest = patterns | "Ingest" >> IngestFiles(tasks)
    to_split = (ingest["pdf"], ingest["image"]) | "DocumentsToSplit" >> beam.Flatten()
    split = to_split | "SplitPages" >> SplitPages(render_cfg)
    ocr = split["pages"] | "OCR" >> OcrPages(handler, prompt, prov)
    failures = (ingest["failures"], split["failures"], ocr["failures"]) | (
        "AllFailures" >> beam.Flatten()
    )
    documents = (ingest["sources"], split["num_pages"], ocr["pages"], failures) | (
        "Documents" >> SummarizeDocuments(prov)
    )
    documents | "WriteDocuments" >> WriteTable(join(staged, "documents"), DOCUMENTS)
    ocr["pages"] | "WritePages" >> WriteTable(join(staged, "pages"), PAGES)
    (
        failures
        | "FailureRows" >> beam.Map(lambda failure: failure.to_row(run_id))
        | "WriteFailures" >> WriteTable(join(staged, "failures"), FAILURES)
    )


def run(
    argv: list[str] | None = None,
    test_pipeline: beam.Pipeline | None = None,
    *,
    model_handler: ModelHandler | None = None,
) -> PipelineResult:
    """Run the job and publish its tables. `model_handler` replaces the backend (tests)."""
    options = PipelineOptions(argv)
    opts = options.view_as(VlbeamOptions)
    if not opts.input or not opts.output:
        raise SystemExit("vlbeam run: --input and --output are required")
    standard = options.view_as(StandardOptions)
    if test_pipeline is None and not standard.runner:
        standard.runner = DEFAULT_RUNNER
    run_id = opts.run_id or new_run_id()

    if model_handler is None:
        from vlbeam.transforms.qwen_transformers import (
            TransformersQwenHandler,
            check_model_available,
        )

        check_model_available(opts.model)
        model_handler = TransformersQwenHandler(model_config(opts), large_model=opts.large_model)

    p = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    build_pipeline(p, opts, model_handler, run_id)
    started = time.monotonic()
    logger.info("vlbeam run %s: %s -> %s", run_id, ", ".join(opts.input), opts.output)
    result = p.run()
    state = result.wait_until_finish()
    if state not in (PipelineState.DONE, None):
        raise RuntimeError(f"pipeline ended in state {state}; previous output left in place")
    publish(opts.output, run_id, TABLES)
    print(format_summary(counters(result), time.monotonic() - started, opts.output, run_id))
    return result
