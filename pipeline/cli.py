"""The `vlbeam` console script: `vlbeam run ...`, `vlbeam report DIR`, `vlbeam tiny-model DIR`."""

from __future__ import annotations

import argparse
import logging
import sys

APITOOLS_NOISE = "apitools not found, and bigquery client libraries are not available"


def _drop_apitools_warning(record: logging.LogRecord) -> bool:
    """Beam logs this on the root logger when it imports its BigQuery clients without
    google-apitools (every command: nothing a vlbeam user can act on). Only that record."""
    return not (record.name == "root" and str(record.msg).startswith(APITOOLS_NOISE))


logging.getLogger().addFilter(_drop_apitools_warning)

USAGE = """usage: vlbeam run --input GLOB [--input GLOB ...] --output DIR [--tasks ocr]
                  [--model ID_OR_PATH] [--max-cost USD] [any Beam pipeline flag]
       vlbeam plan --input GLOB [...] [the flags of vlbeam run] [--json]
       vlbeam load duckdb DIR DB
       vlbeam compact DIR [--table NAME] [--target-file-mb 256]
       vlbeam report DIR [--run RUN_ID] -o report.html
       vlbeam tiny-model DIR

Run `vlbeam run --help` for every job flag."""

# `vlbeam run`'s exit code when an engine stopped the run: every request rejected (nothing
# published), or its breaker open (what was done is published). 2: a bad invocation.
ENGINE_STOPPED = 3  # = pipeline/outcome.py EXIT_ENGINE_UNAVAILABLE (the exit-code policy)
# `vlbeam run`'s exit code when --max-cost refused the run at launch (nothing written) or
# stopped it mid-run (what was done is published): = pipeline/outcome.py EXIT_BUDGET
EXIT_BUDGET = 4


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("apache_beam", "httpx", "urllib3", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if command == "run":
        if "-h" in rest or "--help" in rest:
            from vlbeam.pipeline.options import VlbeamOptions

            parser = argparse.ArgumentParser(prog="vlbeam run")
            VlbeamOptions._add_argparse_args(parser)
            parser.print_help()
            return 0
        from vlbeam.pipeline.options import refuse_unknown_flags
        from vlbeam.pipeline.outcome import EXIT_USAGE
        from vlbeam.pipeline.run import run, run_outcome
        from vlbeam.runners import expand_target
        from vlbeam.schemas.errors import (
            BudgetExceeded,
            EngineUnavailable,
            RunAborted,
            VlbeamError,
        )

        try:
            argv = expand_target(rest)
            refuse_unknown_flags(argv)  # a misspelled flag stops here, before any work
            result = run(argv)
        except (RunAborted, EngineUnavailable) as exc:  # the engine stopped the run
            print(f"vlbeam: {exc}", file=sys.stderr)
            return ENGINE_STOPPED
        except BudgetExceeded as exc:  # refused at launch, or stopped at the budget
            print(f"vlbeam: {exc}", file=sys.stderr)
            return EXIT_BUDGET
        except (VlbeamError, ValueError) as exc:  # bad flags, model/key, API check, --output
            print(f"vlbeam: {exc}", file=sys.stderr)
            return EXIT_USAGE
        outcome = run_outcome(result, argv)
        if outcome.message:
            print(f"vlbeam: {outcome.message}", file=sys.stderr)
        return outcome.code
    if command == "plan":
        if "-h" in rest or "--help" in rest:
            print("vlbeam plan: the flags of `vlbeam run` (no inference; --output not needed), "
                  "plus --json. `vlbeam run --help` lists them.")  # fmt: skip
            return 0
        from vlbeam.pipeline.plan import plan_main
        from vlbeam.runners import expand_target
        from vlbeam.schemas.errors import VlbeamError

        try:
            return plan_main(expand_target(rest))
        except (VlbeamError, ValueError) as exc:
            print(f"vlbeam: {exc}", file=sys.stderr)
            return 2
    if command == "load":
        if len(rest) != 3 or rest[0] != "duckdb":
            print("usage: vlbeam load duckdb DIR DB", file=sys.stderr)
            return 2
        from vlbeam.outputs.load_duckdb import load_duckdb

        for table, n in load_duckdb(rest[1], rest[2]).items():
            print(f"{table}: {n} rows")
        return 0
    if command == "compact":
        from vlbeam.outputs.compact import main as compact_main

        return compact_main(rest)
    if command == "report":
        from vlbeam.outputs.report import main as report_main
        from vlbeam.pipeline.prompts import builtin_prompt_text

        return report_main(rest, prompt_text=builtin_prompt_text)
    if command == "tiny-model":
        if len(rest) != 1:
            print("usage: vlbeam tiny-model DIR", file=sys.stderr)
            return 2
        from vlbeam.transforms.backends.tiny_model import write_tiny_model

        print(write_tiny_model(rest[0]))
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
