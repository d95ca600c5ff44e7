"""`vlbeam plan`: the same inputs and flags as `vlbeam run`, no inference: what the run would
do and cost (`transforms/estimate.py` counts), as a table per input kind, or `--json`. The
run makes the same plan at launch when `--max-cost` is set, and refuses to start when its
upper bound exceeds the budget."""

from __future__ import annotations

import json
import logging

from apache_beam.options.pipeline_options import PipelineOptions

from vlbeam.pipeline.options import (
    VlbeamOptions,
    api_config,
    apply_model_preset,
    page_policy,
    parse_tasks,
    refuse_unknown_flags,
    render_config,
    video_config,
)
from vlbeam.pipeline.prompts import grounding_prompt, ocr_prompt, read_queries
from vlbeam.transforms.backends.vision_tokens import TokenCounter, tokenizer_folder
from vlbeam.transforms.estimate import KINDS, Plan, PlanSettings, Prices, make_plan

logger = logging.getLogger(__name__)

PLAN_ONLY_FLAGS = ("--json",)


def plan_prices(opts: VlbeamOptions) -> Prices:
    """The prices of the flags, or of the provider preset (`--backend openai`)."""
    given = Prices(opts.price_input_per_mtok, opts.price_output_per_mtok)
    if given.set or opts.backend != "openai":
        return given
    try:
        cfg = api_config(opts)
    except (ValueError, TypeError):  # an incomplete API setup: no preset prices to use
        return given
    return Prices(cfg.price_input_per_mtok, cfg.price_output_per_mtok)


def plan_settings(opts: VlbeamOptions, prices: Prices | None = None) -> PlanSettings:
    queries = read_queries(opts.query, opts.queries_file)
    return PlanSettings(
        tasks=parse_tasks(opts.tasks),
        render=render_config(opts),
        video=video_config(opts),
        ocr_prompt=ocr_prompt(opts.ocr_prompt_file).text,
        grounding_prompt=grounding_prompt(opts.grounding_prompt_file, queries).text,
        max_new_tokens=opts.max_new_tokens,
        retry_degenerate=page_policy(opts).retry_degenerate,
        prices=prices if prices is not None else plan_prices(opts),
    )


def token_counter(opts: VlbeamOptions) -> TokenCounter:
    """The model's tokenizer and processor settings (`vision_tokens.tokenizer_folder`)."""
    model = opts.model if opts.backend != "openai" else (opts.api_model or opts.model)
    return TokenCounter(tokenizer_folder(model))


def build_plan(opts: VlbeamOptions, prices: Prices | None = None) -> Plan:
    return make_plan(list(opts.input), plan_settings(opts, prices), token_counter(opts))


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def format_plan(plan: Plan) -> str:
    """The table: a row per input kind, the total, the files the run would fail."""
    heads = ("kind", "files", "pages", "video s", "windows", "frames", "model calls",
             "input tokens", "max output tokens", "cost USD")  # fmt: skip
    keys = ("files", "pages", "video_seconds", "windows", "frames", "model_calls",
            "input_tokens", "max_output_tokens")  # fmt: skip
    rows = []
    for name, totals in [*((k, plan.totals([k])) for k in KINDS), ("total", plan.totals())]:
        cost = totals["cost_usd"]
        cells = [_number(totals[k]) for k in keys]
        rows.append((name, *cells, "-" if cost is None else f"{cost:,.4f}"))
    widths = [max(len(str(r[i])) for r in (heads, *rows)) for i in range(len(heads))]

    def line(cells) -> str:
        first = str(cells[0]).ljust(widths[0])
        return "  ".join([first, *(str(c).rjust(w) for c, w in zip(cells[1:], widths[1:],
                                                                  strict=True))])  # fmt: skip

    out = [line(heads), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    total = plan.totals()
    out.append(
        "upper bounds: model calls count every page that renders (blank pages and "
        "--text-layer-policy prefer skip some) and --retry-degenerate retries; max output "
        "tokens = model calls x --max-new-tokens"
        + (
            ""
            if total["cost_usd"] is not None
            else "; no cost without --price-input-per-mtok and --price-output-per-mtok"
        )
    )
    failing = [f for f in plan.files if f.error]
    if failing or total["failing_pages"]:
        out.append(f"the run would fail {len(failing)} file(s) and "
                   f"{total['failing_pages']} page(s):")  # fmt: skip
        out += [f"  {f.uri}: {f.error}" for f in failing]
    return "\n".join(out)


def plan_main(argv: list[str]) -> int:
    """`vlbeam plan ...` (flags of `vlbeam run`, plus `--json`)."""
    as_json = "--json" in argv
    argv = [a for a in argv if a not in PLAN_ONLY_FLAGS]
    refuse_unknown_flags(argv)
    opts = PipelineOptions(argv).view_as(VlbeamOptions)
    apply_model_preset(opts, argv)  # the page size and answer length a preset sets
    if not opts.input:
        raise ValueError("vlbeam plan: --input is required")
    plan = build_plan(opts)
    print(json.dumps(plan.to_json(), indent=2) if as_json else format_plan(plan))
    return 0
