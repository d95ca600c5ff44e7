"""Versioned prompts: built-in ones ship as package data, users may replace them by file.

Built-in OCR prompts (`prompts/<prompt_id>.txt`; leading and trailing whitespace is stripped):
- `ocr_markdown_v1` / `ocr_html_v1`: "qwenvl markdown" / "qwenvl html" (Qwen3-VL's
  document-parsing cookbook), the default preset's, by `--ocr-format`;
- `olmocr2_v4_yaml_v1`: olmOCR 2's `build_no_anchoring_v4_yaml_prompt()` (allenai/olmocr
  @ f7cfe4c, `olmocr/prompts/prompts.py`), byte for byte, "LateX" included;
- `chandra1_ocr_layout_v1`: Chandra 1's `ocr_layout` prompt with bbox_scale 1024
  (datalab-to/chandra @ a6928a2, `chandra/prompts.py`);
- `chandra2_ocr_layout_v1`: Chandra 2's `ocr_layout` prompt. SECONDARY: the upstream file at
  v0.2.0 was not reachable; this is the text two third-party copies of `chandra/prompts.py`
  agree on byte for byte. Compare it with upstream before relying on it;
- `nanonets_ocr2_v1`: the Nanonets-OCR2-3B model card's prompt (the same in allenai/olmocr
  @ f7cfe4c, `olmocr/bench/runners/run_nanonetsocr_2.py`).
See `schemas/presets.py` for how each model is asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
from importlib import resources
from pathlib import Path

from vlbeam.schemas.config import Prompt
from vlbeam.schemas.presets import DEFAULT_PRESET, ModelPreset

DEFAULT_OCR_PROMPT_ID = "ocr_markdown_v1"
# --ocr-format → the built-in prompt: the Qwen3-VL cookbook's document-parsing prompts
# ("qwenvl markdown" / "qwenvl html", cookbooks/document_parsing.ipynb; /work/notes/presets.md §4)
OCR_PROMPT_IDS = {"markdown": DEFAULT_OCR_PROMPT_ID, "html": "ocr_html_v1"}


def builtin_prompt(prompt_id: str) -> Prompt:
    """A prompt shipped with vlbeam, by id (the file name without `.txt`)."""
    try:
        text = resources.files("vlbeam.pipeline").joinpath(f"prompts/{prompt_id}.txt").read_text()
    except FileNotFoundError as exc:
        raise ValueError(f"no built-in prompt {prompt_id!r}") from exc
    return Prompt(prompt_id=prompt_id, text=text.strip())


def builtin_prompt_text(prompt_id: str) -> str | None:
    """A built-in prompt's text, or None when there is no such prompt (the report's lookup)."""
    try:
        return builtin_prompt(prompt_id).text
    except (ValueError, OSError):
        return None


def prompt_from_file(path: str) -> Prompt:
    """A user's prompt file; its id names the file and pins its content by hash."""
    text = Path(path).read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"prompt file {path} is empty")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return Prompt(prompt_id=f"file:{Path(path).stem}:{digest}", text=text)


def ocr_prompt(
    path: str | None, ocr_format: str = "markdown", *, preset: ModelPreset | None = None
) -> Prompt:
    """--ocr-prompt-file, else the prompt of the model preset (an OCR fine-tune's own), else
    the built-in prompt of the answer format (`--ocr-format`, vlbeam's default preset); in
    the preset's message order either way."""
    if path:
        prompt = prompt_from_file(path)
    elif preset is not None and preset.name != DEFAULT_PRESET:
        prompt = builtin_prompt(preset.prompt_id)
    else:
        prompt = builtin_prompt(OCR_PROMPT_IDS[ocr_format])
    if preset is not None and preset.prompt_first:
        prompt = dataclasses.replace(prompt, prompt_first=True)
    return prompt


GROUNDING_QUERY_PROMPT_ID = "grounding_query_v1"
TIMELINE_PROMPT_ID = "timeline_v1"
COARSE_QUERY_PROMPT_ID = "coarse_query_v1"


def grounding_prompt(path: str | None, queries: list[str]) -> Prompt:
    """The grounding prompt: query grounding when `queries` is non-empty, else the event
    timeline. A prompt file replaces either; `{queries}` in it is filled in."""
    if path:
        template = prompt_from_file(path)
    else:
        template = builtin_prompt(GROUNDING_QUERY_PROMPT_ID if queries else TIMELINE_PROMPT_ID)
    return _with_queries(template, queries)


def coarse_prompt(path: str | None, queries: list[str]) -> Prompt:
    """The coarse pass's prompt (--grounding-strategy coarse-to-fine): asks, per numbered
    query, for every moment that may match (recall first). A prompt file replaces it."""
    template = prompt_from_file(path) if path else builtin_prompt(COARSE_QUERY_PROMPT_ID)
    return _with_queries(template, queries)


def _with_queries(template: Prompt, queries: list[str]) -> Prompt:
    numbered = "\n".join(f"{i}. {q}" for i, q in enumerate(queries, 1))
    text = template.text
    if queries and "{queries}" not in text:  # a custom prompt must still name the queries
        text += "\nQueries:\n{queries}"
    return Prompt(template.prompt_id, text.replace("{queries}", numbered))


def read_queries(queries: list[str] | None, queries_file: str | None) -> list[str]:
    """--query values then one query per non-empty line of --queries-file, de-duplicated."""
    found = list(queries or [])
    if queries_file:
        found += Path(queries_file).read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys(q.strip() for q in found if q.strip()))


EXTRACT_PROMPT_ID = "extract_json_v1"


def extract_prompt(path: str | None) -> Prompt:
    """The --extract instruction (the schema and the document follow it in each request)."""
    return prompt_from_file(path) if path else builtin_prompt(EXTRACT_PROMPT_ID)


def read_extract_schema(path: str):
    """--extract's JSON Schema, read through Beam's filesystems (local, gs://, s3://, ...) and
    checked against its metaschema: a bad one fails here, at launch, with the validator's
    message (`ExtractSchemaError`, a ValueError: `vlbeam run` prints it as one line)."""
    from apache_beam.io.filesystems import FileSystems

    from vlbeam.transforms.answers.extraction import ExtractSchemaError, parse_schema

    try:
        with FileSystems.open(path) as handle:
            raw = handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExtractSchemaError(f"--extract {path}: cannot read: {exc}") from None
    except Exception as exc:  # Beam raises its own BeamIOError for a missing file
        raise ExtractSchemaError(f"--extract {path}: cannot read: {exc}") from None
    return parse_schema(raw, where=f"--extract {path}")
