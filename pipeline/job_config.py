"""The settings of one `vlbeam run` that belong to the job, not to a stage: what to read and
write, which tasks and backend, prompts and queries. Declared once here, with their flags
(`schemas/flags.py`); the stages' own settings are declared on their configs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from vlbeam.schemas.config import TASKS
from vlbeam.schemas.flags import flag
from vlbeam.schemas.presets import DEFAULT_PRESET, PRESETS
from vlbeam.schemas.run_ids import check_run_id

OUTPUT_MODES = ("overwrite", "append")
BACKENDS = ("transformers", "openai", "vllm", "sglang")


def _run_id(value: str) -> str:
    """argparse type of --run-id: refuse ids engines would read as numbers or dates."""
    if not value:
        return value  # empty: generate one
    try:
        return check_run_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_tasks(value: str) -> frozenset[str]:
    tasks = frozenset(t.strip() for t in value.split(",") if t.strip())
    unknown = tasks - set(TASKS)
    if not tasks or unknown:
        raise ValueError(f"--tasks must name some of {TASKS}, got {value!r}")
    return tasks


@dataclass(frozen=True)
class JobConfig:
    input: tuple[str, ...] = flag(
        (), convert=tuple, help="file pattern to read (local, gs://, s3://); repeatable"
    )
    input_manifest: tuple[str, ...] = flag(
        (),
        convert=tuple,
        help="CSV, JSON Lines or Parquet file (any Beam filesystem) listing inputs: a 'uri' "
        "column, and any other columns, carried to every row made from that file as 'meta'; "
        "repeatable",
    )
    output: str | None = flag(None, help="output folder for the Parquet tables")
    output_mode: str = flag(
        "overwrite",
        choices=OUTPUT_MODES,
        help="overwrite: this run replaces the output; append: runs sit side by side "
        "(run=<run_id> partitions), for scheduled runs",
    )
    skip_existing: bool = flag(
        False,
        help="skip files whose content was processed OK before with the same model and "
        "prompt (read from the documents table in --output); implies --output-mode append",
    )
    tasks: str = flag(
        ",".join(TASKS),
        help=f"comma-separated tasks from {TASKS}: ocr for PDFs/images, grounding for video",
    )
    run_id: str | None = flag(
        None,
        type=_run_id,
        help="id stamped on every row and naming its run=<id> partition: letters, digits, "
        "'.', '_', '-', and not a number or a date, so every engine reads it as a string "
        "(default: UTC time + random suffix)",
    )
    backend: str = flag(
        "transformers",
        choices=BACKENDS,
        help="inference backend: local transformers, an OpenAI-compatible HTTP API, or a "
        "vLLM/SGLang server that each worker starts and manages",
    )
    model_preset: str = flag(
        DEFAULT_PRESET,
        choices=sorted(PRESETS),
        help="an OCR model's published way of being asked: prompt, message order, page size, "
        "sampling, answer format and parser, server flags (qwen3-vl: vlbeam's default; "
        "olmocr-2, chandra, chandra-1, nanonets-ocr2); flags given explicitly still win",
    )
    ocr_prompt_file: str | None = flag(
        None, help="text file replacing the built-in OCR prompt (prompt_id pins its hash)"
    )
    query: tuple[str, ...] = flag(
        (),
        convert=tuple,
        help="grounding query (repeatable); without any, each window gets an event timeline",
    )
    queries_file: str | None = flag(None, help="file with one grounding query per line")
    grounding_prompt_file: str | None = flag(
        None, help="text file replacing the built-in grounding prompt ({queries} is filled in)"
    )
    coarse_prompt_file: str | None = flag(
        None,
        help="text file replacing the built-in prompt of the coarse pass of "
        "--grounding-strategy coarse-to-fine ({queries} is filled in)",
    )
    no_preflight: bool = flag(
        False, help="skip the one-token request that checks the key before the run"
    )
    max_failed_fraction: float = flag(
        0.2,
        help="exit with code 5 (after publishing) when more than this fraction of the work "
        "units (pages, video windows, files) failed; 1 never, 0 on any failure",
    )

    def __post_init__(self) -> None:
        parse_tasks(self.tasks)
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            raise ValueError("--max-failed-fraction must be between 0 and 1")
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"--output-mode must be one of {OUTPUT_MODES}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {BACKENDS}")
        if self.model_preset not in PRESETS:
            raise ValueError(f"--model-preset must be one of {sorted(PRESETS)}")

    @property
    def task_set(self) -> frozenset[str]:
        return parse_tasks(self.tasks)
