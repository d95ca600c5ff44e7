"""`vlbeam run` flags as a Beam `PipelineOptions` subclass, so runner flags pass straight through.

Every flag takes the dashed spelling users type (`--max-new-tokens`) and the
underscored one Beam uses when it re-creates options on workers.
"""

from __future__ import annotations

import json

from apache_beam.options.pipeline_options import PipelineOptions

from vlbeam.schemas.config import (
    DEVICES,
    DTYPES,
    IMAGE_FORMATS,
    PDF_RENDERERS,
    TASKS,
    ModelConfig,
    RenderConfig,
)
from vlbeam.transforms.backends.openai_protocol import (
    PRESETS,
    STYLES,
    ApiConfig,
    api_config_from_preset,
)
from vlbeam.transforms.media.video_decode import SamplingConfig
from vlbeam.transforms.split_video import VideoConfig


def _flag(parser, name: str, **kwargs) -> None:
    dashed = f"--{name.replace('_', '-')}"
    names = [dashed] if dashed == f"--{name}" else [dashed, f"--{name}"]
    parser.add_argument(*names, dest=name, **kwargs)


class VlbeamOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        r, m = RenderConfig(), ModelConfig()
        _flag(
            parser,
            "input",
            action="append",
            default=None,
            help="file pattern to read (local, gs://, s3://); repeatable",
        )
        _flag(parser, "output", default=None, help="output folder for the Parquet tables")
        _flag(
            parser,
            "output_mode",
            default="overwrite",
            choices=["overwrite", "append"],
            help="overwrite: this run replaces the output; append: runs sit side by side "
            "(run=<run_id> partitions), for scheduled runs",
        )
        _flag(
            parser,
            "skip_existing",
            action="store_true",
            default=False,
            help="skip files whose content was processed OK before with the same model and "
            "prompt (read from the documents table in --output); implies --output-mode append",
        )
        _flag(
            parser,
            "tasks",
            default=",".join(TASKS),
            help=f"comma-separated tasks from {TASKS}: ocr for PDFs/images, grounding for video",
        )
        _flag(
            parser,
            "run_id",
            default=None,
            help="id stamped on every row (default: UTC time + random suffix)",
        )
        # model
        _flag(
            parser,
            "model",
            default=m.model,
            help="hub id or local folder of a Qwen3-VL checkpoint, or 'tiny-random'",
        )
        _flag(
            parser,
            "backend",
            default=m.backend,
            choices=["transformers", "openai"],
            help="inference backend: local transformers, or an OpenAI-compatible HTTP API",
        )
        _flag(parser, "device", default=m.device, choices=DEVICES)
        _flag(parser, "dtype", default=m.dtype, choices=DTYPES)
        _flag(parser, "max_new_tokens", type=int, default=m.max_new_tokens)
        _flag(parser, "min_batch_size", type=int, default=m.min_batch_size)
        _flag(parser, "max_batch_size", type=int, default=m.max_batch_size)
        _flag(parser, "max_batch_duration_secs", type=int, default=None)
        _flag(
            parser,
            "attn_implementation",
            default=None,
            help="transformers attention implementation (sdpa, flash_attention_2, eager)",
        )
        _flag(
            parser,
            "large_model",
            action="store_true",
            default=False,
            help="share one model per VM across SDK processes (RunInference large_model)",
        )
        _flag(
            parser,
            "ocr_prompt_file",
            default=None,
            help="text file replacing the built-in OCR prompt (prompt_id pins its hash)",
        )
        # documents
        _flag(parser, "pdf_renderer", default=r.renderer, choices=PDF_RENDERERS)
        _flag(
            parser,
            "pdf_password",
            default=None,
            help="password for encrypted PDFs (the empty password is always tried first)",
        )
        _flag(
            parser,
            "target_long_side",
            type=int,
            default=r.target_long_side,
            help="rendered page size: pixels on the longest side",
        )
        _flag(
            parser,
            "max_page_pixels",
            type=int,
            default=r.max_pixels,
            help="hard cap on pixels per rendered page (larger pages are scaled down)",
        )
        _flag(
            parser,
            "render_timeout_s",
            type=float,
            default=r.timeout_s,
            help="time bound for rendering one page",
        )
        _flag(
            parser,
            "render_memory_mb",
            type=int,
            default=r.max_memory_mb,
            help="address-space limit of the helper process",
        )
        _flag(
            parser,
            "page_image_format",
            default=r.image_format,
            choices=IMAGE_FORMATS,
            help="how pages travel between stages (png is lossless and fastest to encode)",
        )
        _flag(
            parser,
            "pages_per_task",
            type=int,
            default=r.pages_per_task,
            help="pages per render work item (big PDFs fan out in ranges of this size)",
        )

        # video
        v, vs = VideoConfig(), SamplingConfig()
        _flag(
            parser,
            "query",
            action="append",
            default=None,
            help="grounding query (repeatable); without any, each window gets an event timeline",
        )
        _flag(parser, "queries_file", default=None, help="file with one grounding query per line")
        _flag(
            parser,
            "grounding_prompt_file",
            default=None,
            help="text file replacing the built-in grounding prompt ({queries} is filled in)",
        )
        _flag(
            parser,
            "window_seconds",
            type=float,
            default=v.window_s,
            help="length of the video windows the model sees",
        )
        _flag(
            parser,
            "window_overlap_seconds",
            type=float,
            default=v.overlap_s,
            help="overlap between consecutive windows (events on a boundary stay whole)",
        )
        _flag(parser, "fps", type=float, default=vs.fps, help="frames sampled per second")
        _flag(parser, "max_frames_per_window", type=int, default=vs.max_frames)
        _flag(parser, "max_pixels_per_frame", type=int, default=vs.max_pixels)
        _flag(
            parser,
            "decode_timeout_s",
            type=float,
            default=v.timeout_s,
            help="time bound for probing a video or decoding one window",
        )
        # HTTP API backend (--backend openai)
        _flag(
            parser,
            "provider",
            default="openai",
            choices=sorted(PRESETS),
            help="API preset: base URL, default model, allowed extra fields",
        )
        _flag(
            parser,
            "api_style",
            default=None,
            choices=STYLES,
            help="request style (default: the preset's; chat for all built-in presets)",
        )
        _flag(parser, "base_url", default=None, help="API base URL, e.g. http://host:8000/v1")
        _flag(parser, "api_model", default=None, help="model name sent to the API")
        _flag(
            parser,
            "api_key_env",
            default=None,
            help="environment variable holding the API key ('' for none); the key itself is "
            "never a flag",
        )
        _flag(parser, "extra_body", default="{}", help="JSON object merged into every request")
        _flag(
            parser,
            "api_header",
            action="append",
            default=None,
            help="extra request header NAME=VALUE (e.g. HTTP-Referer, X-Title); repeatable",
        )
        _flag(
            parser,
            "provider_order",
            default=None,
            help="Vercel AI Gateway / OpenRouter provider routing order, comma-separated",
        )
        _flag(
            parser,
            "reasoning_effort",
            default=None,
            choices=["low", "medium", "high"],
            help="OpenRouter reasoning effort for thinking models",
        )
        _flag(parser, "temperature", type=float, default=0.0)
        _flag(parser, "top_p", type=float, default=None)
        _flag(parser, "seed", type=int, default=None)
        _flag(
            parser,
            "stream",
            action="store_true",
            default=False,
            help="use server-sent events (streaming) for API requests",
        )
        _flag(
            parser,
            "max_concurrency",
            type=int,
            default=32,
            help="concurrent API requests per worker process",
        )
        _flag(
            parser,
            "requests_per_minute",
            type=float,
            default=None,
            help="rate limit per worker process",
        )
        _flag(parser, "request_timeout_s", type=float, default=300.0)
        _flag(parser, "max_attempts", type=int, default=6, help="tries per request (retries + 1)")
        _flag(
            parser,
            "price_input_per_mtok",
            type=float,
            default=None,
            help="USD per million input tokens (for cost columns and the summary)",
        )
        _flag(parser, "price_output_per_mtok", type=float, default=None)
        _flag(
            parser,
            "native_video",
            action="store_true",
            default=False,
            help="send video windows as the provider's frame-list video part (dashscope); only "
            "windows that start at 0 s with evenly spaced frames, since the server derives times "
            "from fps; other windows keep a <t seconds> text before each frame",
        )
        _flag(
            parser,
            "no_preflight",
            action="store_true",
            default=False,
            help="skip the one-token request that checks the key before the run",
        )


def api_config(opts: VlbeamOptions) -> ApiConfig:
    extra = json.loads(opts.extra_body or "{}")
    if not isinstance(extra, dict):
        raise ValueError("--extra-body must be a JSON object")
    if opts.provider_order:
        order = [p.strip() for p in opts.provider_order.split(",") if p.strip()]
        if opts.provider == "vercel":
            extra.setdefault("providerOptions", {}).setdefault("gateway", {})["order"] = order
        else:
            extra.setdefault("provider", {})["order"] = order
    if opts.reasoning_effort:
        extra.setdefault("reasoning", {})["effort"] = opts.reasoning_effort
    headers = []
    for item in opts.api_header or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--api-header must be NAME=VALUE, got {item!r}")
        if name.strip().lower() == "authorization":
            raise ValueError("the Authorization header comes from --api-key-env only")
        headers.append((name.strip(), value.strip()))
    return api_config_from_preset(
        opts.provider,
        base_url=opts.base_url,
        model=opts.api_model,
        api_key_env=opts.api_key_env,
        style=opts.api_style,
        extra_body=extra,
        headers=tuple(headers),
        max_tokens=opts.max_new_tokens,
        temperature=opts.temperature,
        top_p=opts.top_p,
        seed=opts.seed,
        stream=opts.stream,
        max_concurrency=opts.max_concurrency,
        requests_per_minute=opts.requests_per_minute,
        timeout_s=opts.request_timeout_s,
        max_attempts=opts.max_attempts,
        price_input_per_mtok=opts.price_input_per_mtok,
        price_output_per_mtok=opts.price_output_per_mtok,
        native_video=opts.native_video,
    )


def video_config(opts: VlbeamOptions) -> VideoConfig:
    return VideoConfig(
        window_s=opts.window_seconds,
        overlap_s=opts.window_overlap_seconds,
        sampling=SamplingConfig(
            fps=opts.fps,
            max_frames=opts.max_frames_per_window,
            max_pixels=opts.max_pixels_per_frame,
        ),
        timeout_s=opts.decode_timeout_s,
        max_memory_mb=opts.render_memory_mb,
    )


def render_config(opts: VlbeamOptions) -> RenderConfig:
    return RenderConfig(
        renderer=opts.pdf_renderer,
        target_long_side=opts.target_long_side,
        max_pixels=opts.max_page_pixels,
        timeout_s=opts.render_timeout_s,
        max_memory_mb=opts.render_memory_mb,
        image_format=opts.page_image_format,
        password=opts.pdf_password,
        pages_per_task=opts.pages_per_task,
    )


def model_config(opts: VlbeamOptions) -> ModelConfig:
    return ModelConfig(
        model=opts.model,
        backend=opts.backend,
        device=opts.device,
        dtype=opts.dtype,
        max_new_tokens=opts.max_new_tokens,
        min_batch_size=opts.min_batch_size,
        max_batch_size=opts.max_batch_size,
        max_batch_duration_secs=opts.max_batch_duration_secs,
        attn_implementation=opts.attn_implementation,
    )


def parse_tasks(value: str) -> frozenset[str]:
    tasks = frozenset(t.strip() for t in value.split(",") if t.strip())
    unknown = tasks - set(TASKS)
    if not tasks or unknown:
        raise ValueError(f"--tasks must name some of {TASKS}, got {value!r}")
    return tasks
