"""The `vlbeam run` job: `Process` (inputs → one PCollection per table) → `WriteTables`
(staged Parquet) → run → `publish` and the run manifest. The same public pieces a caller
composes in its own pipeline (`vlbeam.Process`, `vlbeam.WriteTables`, `vlbeam.publish`)."""

from __future__ import annotations

import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from vlbeam.outputs.attempt import AttemptRecord
from vlbeam.outputs.layout import new_attempt_id
from vlbeam.outputs.manifest import RunManifest
from vlbeam.outputs.preflight import check_output_writable
from vlbeam.pipeline.budget import (
    account_for,
    check_budget_at_launch,
    finish_budget,
    start_progress,
)
from vlbeam.pipeline.options import (
    VlbeamOptions,
    apply_model_preset,
    job_config,
    refuse_unknown_flags,
)
from vlbeam.pipeline.outcome import Outcome, engine_stopped, judge
from vlbeam.pipeline.process import Process, extraction_plan
from vlbeam.pipeline.settings import Settings
from vlbeam.pipeline.settings import make_backend as _make_backend
from vlbeam.pipeline.summary import counters, format_summary
from vlbeam.pipeline.write_tables import WriteTables, publish
from vlbeam.schemas.errors import EngineUnavailable
from vlbeam.schemas.ids import new_run_id
from vlbeam.transforms.backends.engine import InferenceBackend
from vlbeam.transforms.engine_registry import close_idle_engines

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
    given = sys.argv[1:] if argv is None else argv
    refuse_unknown_flags(given)  # a typo never runs
    options = PipelineOptions(argv)
    opts = options.view_as(VlbeamOptions)
    apply_model_preset(opts, given)  # --model-preset: before anything reads the flags it sets
    if not (opts.input or opts.input_manifest) or not opts.output:
        raise SystemExit("vlbeam run: --input (or --input-manifest) and --output are required")
    standard = options.view_as(StandardOptions)
    if test_pipeline is None and not standard.runner:
        standard.runner = DEFAULT_RUNNER
    settings = Settings.from_options(opts)
    job_config(opts)  # the job's settings, checked (e.g. --max-failed-fraction in [0, 1])
    run_id = opts.run_id or new_run_id()
    attempt = new_attempt_id()
    extraction_plan(settings.extract)  # a bad --extract schema fails before anything else
    check_output_writable(opts.output, run_id, attempt)  # before the model loads or a call
    plan = check_budget_at_launch(opts)  # --max-cost: refuse before any work (None without)
    if model_handler is None:  # its launcher-side checks fail fast (key, model), before
        model_handler = _make_backend(settings)  # anything is written
    process = Process(settings, backend=model_handler, run_id=run_id)  # checks the manifests
    # the ledger of budget and progress (a file under the staging folder): made once the
    # settings and inputs are known good, so a refused job writes nothing
    process.account = account_for(opts, standard.runner, run_id, attempt)
    account = process.account

    mode = "append" if opts.skip_existing else opts.output_mode
    p = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    tables = p | "Process" >> process
    tables | "WriteTables" >> WriteTables(opts.output, run_id, attempt=attempt)
    manifest = RunManifest(run_id, opts, options)
    planned = planned_totals(plan)
    sources = [*(opts.input or ()), *(opts.input_manifest or ())]
    logger.info("vlbeam run %s: %s -> %s", run_id, ", ".join(sources), opts.output)
    display = start_progress(opts, account)
    record = AttemptRecord(opts.output, run_id, attempt).start(planned)  # just before `try`
    try:
        try:
            result = p.run()
            state = result.wait_until_finish()
        finally:
            close_idle_engines()  # in-process runners: nothing outlives the run
            live = display.stop() if display is not None else None
        if state not in (PipelineState.DONE, None):
            raise RuntimeError(f"pipeline ended in state {state}; previous output left in place")
        values = counters(result)
        committed = manifest.record("succeeded", counts=values, attempt=attempt, planned=planned)
        publish(opts.output, run_id, mode, attempt=attempt, manifest=committed)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        manifest.finish(opts.output, "failed", error=error)
        record.finish("failed", manifest.redact(error))
        raise
    record.finish("committed")
    print(format_summary(values, manifest.wall_s, opts.output, run_id))
    refuse_if_engine_unavailable(values)
    finish_budget(account, live)  # raises BudgetExceeded when units were not sent
    return result


def refuse_if_engine_unavailable(values: dict) -> None:
    """After publishing: a run in which an engine's breaker opened (its units failed fast as
    `EngineUnavailable`) did not do its work; it ends with one message and a non-zero exit
    (`vlbeam run` exits 3), whatever the other failures. The counters are read by
    pipeline/outcome.py (`engine_stopped`), with the rest of the exit-code policy."""
    count = engine_stopped(values)
    if count:
        raise EngineUnavailable(
            f"the engine could not serve: {count} unit(s) failed as EngineUnavailable "
            "(see failures.message and the worker log); what was done is published"
        )


def run_outcome(result: PipelineResult, argv: list[str]) -> Outcome:
    """The exit code and message of a run `run(argv)` committed (pipeline/outcome.py)."""
    opts = PipelineOptions(argv).view_as(VlbeamOptions)
    return judge(counters(result), opts.max_failed_fraction, opts.run_id or "")


def planned_totals(plan) -> dict | None:
    """The totals a run plans to produce (`vlbeam plan`'s figures when the launcher made a
    plan, for --max-cost; else None), written into its `running` record when it starts
    (outputs/attempt.py) and kept in its manifest, so a monitor can tell how far a run got or
    that it died. A later count can go through `AttemptRecord.plan`."""
    return plan.totals() if plan is not None else None
