"""The `vlbeam run` job: `Process` (inputs → one PCollection per table) → `WriteTables`
(staged Parquet) → run → `publish` and the run manifest. The same public pieces a caller
composes in its own pipeline (`vlbeam.Process`, `vlbeam.WriteTables`, `vlbeam.publish`)."""

from __future__ import annotations

import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from vlbeam.outputs.manifest import RunManifest
from vlbeam.pipeline.budget import (
    account_for,
    check_budget_at_launch,
    finish_budget,
    start_progress,
)
from vlbeam.pipeline.options import VlbeamOptions, refuse_unknown_flags
from vlbeam.pipeline.process import Process, extraction_plan
from vlbeam.pipeline.settings import Settings
from vlbeam.pipeline.settings import make_backend as _make_backend
from vlbeam.pipeline.summary import counters, format_summary
from vlbeam.pipeline.write_tables import WriteTables, publish
from vlbeam.schemas.errors import EngineUnavailable
from vlbeam.schemas.ids import new_run_id
from vlbeam.transforms.backends.engine import InferenceBackend
from vlbeam.transforms.inference import close_idle_engines

logger = logging.getLogger(__name__)

DEFAULT_RUNNER = "FnApiRunner"  # in-process; never tries to download a runner binary


def make_backend(opts: VlbeamOptions) -> InferenceBackend:
    """The backend `opts` name, after the launcher-side checks that fail fast."""
    return _make_backend(Settings.from_options(opts))


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
    if not (opts.input or opts.input_manifest) or not opts.output:
        raise SystemExit("vlbeam run: --input (or --input-manifest) and --output are required")
    standard = options.view_as(StandardOptions)
    if test_pipeline is None and not standard.runner:
        standard.runner = DEFAULT_RUNNER
    settings = Settings.from_options(opts)
    run_id = opts.run_id or new_run_id()
    extraction_plan(settings.extract)  # a bad --extract schema fails before anything else
    plan = check_budget_at_launch(opts)  # --max-cost: refuse before any work (None without)
    if model_handler is None:  # its launcher-side checks fail fast (key, model), before
        model_handler = _make_backend(settings)  # anything is written
    process = Process(settings, backend=model_handler, run_id=run_id)  # checks the manifests
    # the ledger of budget and progress (a file under the staging folder): made once the
    # settings and inputs are known good, so a refused job writes nothing
    process.account = account_for(opts, standard.runner, run_id)
    account = process.account

    mode = "append" if opts.skip_existing else opts.output_mode
    p = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    tables = p | "Process" >> process
    tables | "WriteTables" >> WriteTables(opts.output, run_id)
    manifest = RunManifest(run_id, opts, options)
    manifest.start(opts.output, plan.totals() if plan is not None else None)
    sources = [*(opts.input or ()), *(opts.input_manifest or ())]
    logger.info("vlbeam run %s: %s -> %s", run_id, ", ".join(sources), opts.output)
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
        publish(opts.output, run_id, mode)
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
