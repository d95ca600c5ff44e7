"""Frozen, validated configuration objects built once in the launcher.

DoFns and model handlers take these as constructor arguments, so workers never
re-parse pipeline options. A field a user sets is declared here once, with its flag
(`schemas/flags.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vlbeam.schemas.flags import flag, none_if_empty
from vlbeam.schemas.presets import ANSWER_FORMATS

PDF_RENDERERS = ("pypdfium2", "pdf2image")
IMAGE_FORMATS = ("png", "webp", "jpeg")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float16", "float32")
TASKS = ("ocr", "grounding")
MAX_BATCH_SIZE = 4
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class RenderConfig:
    renderer: str = flag("pypdfium2", name="pdf_renderer", choices=PDF_RENDERERS)
    password: str | None = flag(
        None,
        name="pdf_password",
        help="deprecated, travels in the pipeline options (runners show them): use "
        "--pdf-password-env or --pdf-passwords-file",
    )
    # where workers find PDF passwords (names and paths only: never a password)
    password_env: str | None = flag(
        None,
        name="pdf_password_env",
        convert=none_if_empty,
        help="environment variable holding the password for encrypted PDFs, read on the "
        "workers (the empty password is always tried first)",
    )
    passwords_file: str | None = flag(
        None,
        name="pdf_passwords_file",
        convert=none_if_empty,
        help='JSON file (any Beam filesystem) of per-file PDF passwords, {"KEY": "password"}: '
        "KEY a doc_id (SHA-256), a URI, a glob on the URI or on the file name; read on the "
        "workers, wins over --pdf-password-env",
    )
    target_long_side: int = flag(1288, help="rendered page size: pixels on the longest side")
    target_short_side: int | None = flag(
        None,
        help="rendered page size by the shortest side instead (pixels; replaces "
        "--target-long-side; some OCR models are trained that way, see --model-preset)",
    )
    max_pixels: int = flag(
        1288 * 1288 * 2,
        name="max_page_pixels",
        help="hard cap on pixels per rendered page (larger pages are scaled down)",
    )
    timeout_s: float = flag(60.0, name="render_timeout_s", help="time bound for rendering one page")
    max_memory_mb: int = flag(
        4096, name="render_memory_mb", help="address-space limit of the helper process"
    )
    image_format: str = flag(
        "png",
        name="page_image_format",
        choices=IMAGE_FORMATS,
        help="how pages travel between stages (png is lossless and fastest to encode)",
    )
    pages_per_task: int = flag(
        8, help="pages per render work item (big PDFs fan out in ranges of this size)"
    )
    workers: int = flag(
        0,
        name="render_workers",
        help="helper processes rendering pages and decoding video per worker process, all "
        "feeding its one engine (0 = one per CPU; see transforms/helper_pool.py)",
    )
    max_inflight_mb: int = flag(
        256,
        help="encoded images (pages, video frames) one worker process keeps sent to or queued "
        "for its engine, in MB, whatever its number of threads (with the engine's request "
        "bound, 2 x its concurrency or batch size)",
    )
    min_short_side: int = 28
    extract_text_layer: bool = True
    # the text layer's lines with their boxes (pdfium text rectangles): set by the job when
    # pages may be answered from the text layer (--text-layer-policy prefer), for their blocks
    text_boxes: bool = False

    def __post_init__(self) -> None:
        if self.max_inflight_mb < 1:
            raise ValueError("max_inflight_mb must be >= 1")
        if self.password_env is not None and not _ENV_NAME.fullmatch(self.password_env):
            raise ValueError(f"not an environment variable name: {self.password_env!r}")
        if self.renderer not in PDF_RENDERERS:
            raise ValueError(f"pdf renderer must be one of {PDF_RENDERERS}, got {self.renderer!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}")
        if not 64 <= self.target_long_side <= 16384:
            raise ValueError("target_long_side must be within 64..16384 px")
        if self.target_short_side is not None and not 28 <= self.target_short_side <= 16384:
            raise ValueError("target_short_side must be within 28..16384 px")
        if self.max_pixels < self.min_short_side * self.min_short_side:
            raise ValueError("max_pixels is too small")
        if self.workers < 0:
            raise ValueError("workers must be >= 0 (0 = one per CPU)")
        if self.timeout_s <= 0 or self.max_memory_mb < 256 or self.pages_per_task < 1:
            raise ValueError("timeout_s > 0, max_memory_mb >= 256 and pages_per_task >= 1")

    def __repr__(self) -> str:  # keep the password out of logs
        pw = "***" if self.password else None
        return (
            f"RenderConfig(renderer={self.renderer!r}, target_long_side={self.target_long_side}, "
            f"target_short_side={self.target_short_side}, "
            f"max_pixels={self.max_pixels}, timeout_s={self.timeout_s}, "
            f"image_format={self.image_format!r}, password={pw}, "
            f"password_env={self.password_env!r}, passwords_file={self.passwords_file!r})"
        )


@dataclass(frozen=True)
class ModelConfig:
    model: str = flag(
        "Qwen/Qwen3-VL-2B-Instruct",
        help="hub id or local folder of a Qwen3-VL checkpoint, or 'tiny-random'",
    )
    device: str = flag("auto", choices=DEVICES)
    dtype: str = flag("auto", choices=DTYPES)
    max_new_tokens: int = flag(2048)
    max_batch_size: int = flag(
        MAX_BATCH_SIZE,
        flag_default=None,  # None: not given (backends without batches refuse the flag)
        help=f"local models: requests per generate call (default {MAX_BATCH_SIZE}); "
        "batches fill to this size whenever enough work is queued",
    )
    # ~31k visual tokens (32x32 px each): 8+ pages, or one 128-frame window at 448x448
    max_batch_pixels: int | None = flag(
        32_000_000,
        help="local models: pixels one batch may show the model (pages and video frames); "
        "bounds memory, so long video windows run in smaller batches",
    )
    max_batch_duration_secs: float | None = flag(
        None,
        help="local models: start a partial batch after this many seconds without new work "
        "(default: only at the end of a bundle)",
    )
    attn_implementation: str | None = flag(
        None, help="transformers attention implementation (sdpa, flash_attention_2, eager)"
    )
    generate_timeout_s: float | None = flag(
        1800.0,
        help="local models: a generate call running longer than this opens the engine's "
        "breaker (the remaining units fail fast as EngineUnavailable, the run exits non-zero)",
    )
    do_sample: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be set")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_batch_pixels is not None and self.max_batch_pixels < 1:
            raise ValueError("max_batch_pixels must be positive (or None: no budget)")
        if self.max_batch_duration_secs is not None and self.max_batch_duration_secs <= 0:
            raise ValueError("max_batch_duration_secs must be positive")
        if self.generate_timeout_s is not None and self.generate_timeout_s <= 0:
            raise ValueError("generate_timeout_s must be positive")


TEXT_LAYER_POLICIES = ("ocr", "prefer", "compare")


@dataclass(frozen=True)
class PagePolicy:
    """Where a page needs the model (`--text-layer-policy`; blank pages never do), how
    often a degenerate answer is tried again (`--retry-degenerate`), and how the model's
    answer is read (from `--model-preset`: `answer_format` one of
    `schemas/presets.ANSWER_FORMATS`, `bbox_grid` the grid its boxes are written on,
    `rotation_retry` olmOCR's re-send of a page it says is not upright)."""

    text_layer_policy: str = flag(
        "ocr",
        choices=TEXT_LAYER_POLICIES,
        help="ocr: the model reads every page (blank pages excepted); prefer: a page whose "
        "text layer passes the quality test uses it, no model call; compare: OCR every page "
        "and record text_layer_agreement where a text layer exists",
    )
    retry_degenerate: int = flag(
        0,
        help="retry a page whose answer is flagged (repetition, length, empty) up to N "
        "times at a rising temperature, keeping the best answer",
    )
    answer_format: str = "markdown"
    bbox_grid: float = 1000.0
    rotation_retry: bool = False

    def __post_init__(self) -> None:
        if self.text_layer_policy not in TEXT_LAYER_POLICIES:
            raise ValueError(
                f"--text-layer-policy must be one of {TEXT_LAYER_POLICIES}, "
                f"got {self.text_layer_policy!r}"
            )
        if not 0 <= self.retry_degenerate <= 5:
            raise ValueError("--retry-degenerate must be within 0..5")
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}")
        if self.rotation_retry and self.answer_format != "olmocr-yaml":
            raise ValueError("the rotation retry reads olmOCR's front matter (olmocr-yaml)")


OCR_FORMATS = ("markdown", "html")
FIGURE_MODES = ("none", "crop")


@dataclass(frozen=True)
class LayoutConfig:
    """What a page's answer is asked for and made into: the answer format (`--ocr-format`;
    `pages.text` is Markdown either way) and figure crops (`--figures`)."""

    ocr_format: str = flag(
        "markdown",
        choices=OCR_FORMATS,
        help="markdown: the model answers Markdown (blocks without boxes); html: QwenVL HTML "
        "(the cookbook's 'qwenvl html' prompt), parsed into blocks with boxes, pages.text "
        "converted to Markdown",
    )
    figures: str = flag(
        "none",
        choices=FIGURE_MODES,
        help="crop: cut each figure block with a box out of the rendered page into the "
        "figures table (PNG), in the stage that rendered it",
    )
    max_figures_per_page: int = flag(16, help="--figures crop: crops kept per page")
    max_figure_pixels: int = flag(
        4_000_000, help="--figures crop: a larger crop is scaled down to this many pixels"
    )

    def __post_init__(self) -> None:
        if self.ocr_format not in OCR_FORMATS:
            raise ValueError(f"--ocr-format must be one of {OCR_FORMATS}")
        if self.figures not in FIGURE_MODES:
            raise ValueError(f"--figures must be one of {FIGURE_MODES}")
        if self.max_figures_per_page < 0 or self.max_figure_pixels < 64:
            raise ValueError("--max-figures-per-page >= 0 and --max-figure-pixels >= 64")


@dataclass(frozen=True)
class Prompt:
    """A versioned prompt: `prompt_id` lands on every row it produced."""

    prompt_id: str
    text: str
    prompt_first: bool = False  # the text part before the image (olmOCR's order), not after

    def __post_init__(self) -> None:
        if not self.prompt_id or not self.text.strip():
            raise ValueError("a prompt needs an id and non-empty text")


EXTRACT_FROM = ("text", "images")
EXTRACT_SCOPES = ("document", "page")


@dataclass(frozen=True)
class ExtractConfig:
    """`--extract SCHEMA.json`: after OCR, ask the model for the fields of a JSON Schema per
    document (or page), validate the answer with `jsonschema`, and write `extractions/`."""

    schema_path: str | None = flag(
        None,
        name="extract",
        help="JSON Schema file (any Beam filesystem; $refs within the file): extract its fields "
        "from every document into the extractions table",
    )
    prompt_file: str | None = flag(
        None,
        name="extract_prompt_file",
        help="text file replacing the built-in extraction prompt (prompt_id pins its hash)",
    )
    source: str = flag(
        "text",
        name="extract_from",
        choices=EXTRACT_FROM,
        help="text: the document's OCR text (a text-only request); images: the page images "
        "with the schema (forms where layout matters), up to --extract-max-pages pages",
    )
    scope: str = flag(
        "document",
        name="extract_scope",
        choices=EXTRACT_SCOPES,
        help="one extraction per document, or per page",
    )
    retries: int = flag(
        2,
        name="extract_retries",
        help="re-ask up to N times when an answer does not validate, with the validator's "
        "errors in the prompt",
    )
    max_pages: int = flag(
        8, name="extract_max_pages", help="--extract-from images: most pages sent per document"
    )
    chunk_chars: int = flag(
        60000,
        name="extract_chunk_chars",
        help="--extract-from text: a text longer than this is extracted chunk by chunk (split "
        "at page boundaries) and the answers merged: arrays concatenated, scalars first "
        "non-null (never silently truncated)",
    )

    def __post_init__(self) -> None:
        if self.source not in EXTRACT_FROM:
            raise ValueError(f"--extract-from must be one of {EXTRACT_FROM}")
        if self.scope not in EXTRACT_SCOPES:
            raise ValueError(f"--extract-scope must be one of {EXTRACT_SCOPES}")
        if not 0 <= self.retries <= 5:
            raise ValueError("--extract-retries must be within 0..5")
        if self.max_pages < 1:
            raise ValueError("--extract-max-pages must be >= 1")
        if self.chunk_chars < 1000:
            raise ValueError("--extract-chunk-chars must be >= 1000")
