"""Frozen, validated configuration objects built once in the launcher.

DoFns and model handlers take these as constructor arguments, so workers never
re-parse pipeline options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PDF_RENDERERS = ("pypdfium2", "pdf2image")
IMAGE_FORMATS = ("png", "webp", "jpeg")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float16", "float32")
TASKS = ("ocr", "grounding")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class RenderConfig:
    renderer: str = "pypdfium2"
    target_long_side: int = 1288
    max_pixels: int = 1288 * 1288 * 2
    min_short_side: int = 28
    timeout_s: float = 60.0
    max_memory_mb: int = 4096
    image_format: str = "png"
    password: str | None = None
    pages_per_task: int = 8
    extract_text_layer: bool = True
    # helper processes rendering/decoding per worker process; 0 = one per CPU it may use
    workers: int = 0
    # where workers find PDF passwords (names and paths only: never a password)
    password_env: str | None = None  # an environment variable's name
    passwords_file: str | None = None  # a JSON file on any Beam filesystem

    def __post_init__(self) -> None:
        if self.password_env is not None and not _ENV_NAME.fullmatch(self.password_env):
            raise ValueError(f"not an environment variable name: {self.password_env!r}")
        if self.renderer not in PDF_RENDERERS:
            raise ValueError(f"pdf renderer must be one of {PDF_RENDERERS}, got {self.renderer!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}")
        if not 64 <= self.target_long_side <= 16384:
            raise ValueError("target_long_side must be within 64..16384 px")
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
            f"max_pixels={self.max_pixels}, timeout_s={self.timeout_s}, "
            f"image_format={self.image_format!r}, password={pw}, "
            f"password_env={self.password_env!r}, passwords_file={self.passwords_file!r})"
        )


@dataclass(frozen=True)
class ModelConfig:
    model: str = "Qwen/Qwen3-VL-2B-Instruct"
    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int = 2048
    do_sample: bool = False
    max_batch_size: int = 4
    # ~31k visual tokens (32x32 px each): 8+ pages, or one 128-frame window at 448x448
    max_batch_pixels: int | None = 32_000_000
    max_batch_duration_secs: float | None = None
    attn_implementation: str | None = None

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


TEXT_LAYER_POLICIES = ("ocr", "prefer", "compare")


@dataclass(frozen=True)
class PagePolicy:
    """Where a page needs the model (`--text-layer-policy`; blank pages never do) and how
    often a degenerate answer is tried again (`--retry-degenerate`)."""

    text_layer_policy: str = "ocr"
    retry_degenerate: int = 0

    def __post_init__(self) -> None:
        if self.text_layer_policy not in TEXT_LAYER_POLICIES:
            raise ValueError(
                f"--text-layer-policy must be one of {TEXT_LAYER_POLICIES}, "
                f"got {self.text_layer_policy!r}"
            )
        if not 0 <= self.retry_degenerate <= 5:
            raise ValueError("--retry-degenerate must be within 0..5")


@dataclass(frozen=True)
class Prompt:
    """A versioned prompt: `prompt_id` lands on every row it produced."""

    prompt_id: str
    text: str

    def __post_init__(self) -> None:
        if not self.prompt_id or not self.text.strip():
            raise ValueError("a prompt needs an id and non-empty text")
