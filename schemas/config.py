"""Frozen, validated configuration objects built once in the launcher.

DoFns and model handlers take these as constructor arguments, so workers never
re-parse pipeline options.
"""

from __future__ import annotations

from dataclasses import dataclass

PDF_RENDERERS = ("pypdfium2", "pdf2image")
IMAGE_FORMATS = ("png", "webp", "jpeg")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float16", "float32")
TASKS = ("ocr", "grounding")


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

    def __post_init__(self) -> None:
        if self.renderer not in PDF_RENDERERS:
            raise ValueError(f"pdf renderer must be one of {PDF_RENDERERS}, got {self.renderer!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}")
        if not 64 <= self.target_long_side <= 16384:
            raise ValueError("target_long_side must be within 64..16384 px")
        if self.max_pixels < self.min_short_side * self.min_short_side:
            raise ValueError("max_pixels is too small")
        if self.timeout_s <= 0 or self.max_memory_mb < 256 or self.pages_per_task < 1:
            raise ValueError("timeout_s > 0, max_memory_mb >= 256 and pages_per_task >= 1")

    def __repr__(self) -> str:  # keep the password out of logs
        pw = "***" if self.password else None
        return (
            f"RenderConfig(renderer={self.renderer!r}, target_long_side={self.target_long_side}, "
            f"max_pixels={self.max_pixels}, timeout_s={self.timeout_s}, "
            f"image_format={self.image_format!r}, password={pw})"
        )


@dataclass(frozen=True)
class ModelConfig:
    model: str = "Qwen/Qwen3-VL-2B-Instruct"
    backend: str = "transformers"
    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int = 2048
    do_sample: bool = False
    min_batch_size: int = 1
    max_batch_size: int = 4
    max_batch_duration_secs: int | None = None
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
        if not 1 <= self.min_batch_size <= self.max_batch_size:
            raise ValueError("need 1 <= min_batch_size <= max_batch_size")


@dataclass(frozen=True)
class Prompt:
    """A versioned prompt: `prompt_id` lands on every row it produced."""

    prompt_id: str
    text: str

    def __post_init__(self) -> None:
        if not self.prompt_id or not self.text.strip():
            raise ValueError("a prompt needs an id and non-empty text")
