"""`vlbeam run` flags as a Beam `PipelineOptions` subclass, so runner flags pass straight through.

Every flag takes the dashed spelling users type (`--max-new-tokens`) and the
underscored one Beam uses when it re-creates options on workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

from apache_beam.options.pipeline_options import PipelineOptions

from vlbeam.schemas.config import (
    DEVICES,
    DTYPES,
    IMAGE_FORMATS,
    PDF_RENDERERS,
    TASKS,
    TEXT_LAYER_POLICIES,
    ModelConfig,
    PagePolicy,
    RenderConfig,
)
from vlbeam.schemas.run_ids import check_run_id
from vlbeam.transforms.backends.managed_server import ServerSpec, size_model_len
from vlbeam.transforms.backends.openai_protocol import (
    PRESETS,
    STYLES,
    ApiConfig,
    api_config_from_preset,
)
from vlbeam.transforms.backends.tiny_model import resolve_model_path
from vlbeam.transforms.media.pdf_passwords import check_password_sources
from vlbeam.transforms.media.video_decode import SAMPLING_MODES, SamplingConfig
from vlbeam.transforms.split_video import VideoConfig

logger = logging.getLogger(__name__)

# the API flags' defaults are ApiConfig's own (one place for them)
API_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ApiConfig)}


def _run_id(value: str) -> str:
    """argparse type of --run-id: refuse ids engines would read as numbers or dates."""
    if not value:
        return value  # empty: generate one
    try:
        return check_run_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
            type=_run_id,
            default=None,
            help="id stamped on every row and naming its run=<id> partition: letters, digits, "
            "'.', '_', '-', and not a number or a date, so every engine reads it as a string "
            "(default: UTC time + random suffix)",
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
            default="transformers",
            choices=["transformers", "openai", "vllm", "sglang"],
            help="inference backend: local transformers, an OpenAI-compatible HTTP API, or a "
            "vLLM/SGLang server that each worker starts and manages",
        )
        _flag(parser, "device", default=m.device, choices=DEVICES)
        _flag(parser, "dtype", default=m.dtype, choices=DTYPES)
        _flag(parser, "max_new_tokens", type=int, default=m.max_new_tokens)
        _flag(
            parser,
            "max_batch_size",
            type=int,
            default=None,
            help=f"local models: requests per generate call (default {m.max_batch_size}); "
            "batches fill to this size whenever enough work is queued",
        )
        _flag(
            parser,
            "max_batch_pixels",
            type=int,
            default=m.max_batch_pixels,
            help="local models: pixels one batch may show the model (pages and video frames); "
            "bounds memory, so long video windows run in smaller batches",
        )
        _flag(
            parser,
            "max_batch_duration_secs",
            type=float,
            default=None,
            help="local models: start a partial batch after this many seconds without new work "
            "(default: only at the end of a bundle)",
        )
        _flag(
            parser,
            "attn_implementation",
            default=None,
            help="transformers attention implementation (sdpa, flash_attention_2, eager)",
        )
        _flag(
            parser,
            "text_layer_policy",
            default="ocr",
            choices=TEXT_LAYER_POLICIES,
            help="ocr: the model reads every page (blank pages excepted); prefer: a page whose "
            "text layer passes the quality test uses it, no model call; compare: OCR every page "
            "and record text_layer_agreement where a text layer exists",
        )
        _flag(
            parser,
            "retry_degenerate",
            type=int,
            default=0,
            help="retry a page whose answer is flagged (repetition, length, empty) up to N "
            "times at a rising temperature, keeping the best answer",
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
            help="deprecated, travels in the pipeline options (runners show them): use "
            "--pdf-password-env or --pdf-passwords-file",
        )
        _flag(
            parser,
            "pdf_password_env",
            default=None,
            help="environment variable holding the password for encrypted PDFs, read on the "
            "workers (the empty password is always tried first)",
        )
        _flag(
            parser,
            "pdf_passwords_file",
            default=None,
            help='JSON file (any Beam filesystem) of per-file PDF passwords, {"KEY": "password"}: '
            "KEY a doc_id (SHA-256), a URI, a glob on the URI or on the file name; read on the "
            "workers, wins over --pdf-password-env",
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
            "render_workers",
            type=int,
            default=r.workers,
            help="helper processes rendering pages and decoding video per worker process, all "
            "feeding its one engine (0 = one per CPU; see transforms/helper_pool.py)",
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
            "sampling",
            default=vs.mode,
            choices=SAMPLING_MODES,
            help="frames: the first frame at or after each instant, every 1/fps; keyframes: the "
            "first keyframe at or after each instant, decoding keyframes only (a cheap pass over "
            "very long videos: spacing is the file's keyframe interval, --fps an upper bound)",
        )
        _flag(
            parser,
            "decode_timeout_s",
            type=float,
            default=v.timeout_s,
            help="time bound for probing a video or decoding one window",
        )
        # managed inference servers (--backend vllm|sglang)
        _flag(
            parser,
            "server_python",
            default=None,
            help="vllm/sglang: an interpreter with vLLM or SGLang installed (default: the vllm "
            "or sglang on PATH)",
        )
        _flag(
            parser,
            "server_command",
            default=None,
            help="vllm/sglang: replace the whole server command; {model}, {host}, {port} and "
            "{python} are filled in (any OpenAI-compatible server)",
        )
        _flag(
            parser,
            "server_arg",
            action="append",
            default=None,
            help="vllm/sglang: an extra argument for the server command; repeatable",
        )
        _flag(
            parser,
            "tensor_parallel_size",
            type=int,
            default=1,
            help="vllm/sglang: GPUs per server (default 1: one server per GPU, data parallel)",
        )
        _flag(
            parser,
            "server_start_timeout_s",
            type=float,
            default=1200.0,
            help="vllm/sglang: how long a server may take to load and answer /v1/models",
        )
        _flag(
            parser,
            "max_server_restarts",
            type=int,
            default=3,
            help="vllm/sglang: restarts of a server that died before the worker gives up",
        )
        _flag(
            parser,
            "server_max_model_len",
            type=int,
            default=None,
            help="vllm/sglang: context length (default: sized for a page, or for a video "
            "window at --max-frames-per-window when grounding)",
        )
        _flag(
            parser,
            "gpu_memory_utilization",
            type=float,
            default=0.9,
            help="vllm/sglang: share of GPU memory the server may take",
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
        _flag(parser, "temperature", type=float, default=API_DEFAULTS["temperature"])
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
            default=API_DEFAULTS["max_concurrency"],
            help="concurrent API requests per worker process",
        )
        _flag(
            parser,
            "requests_per_minute",
            type=float,
            default=None,
            help="rate limit per worker process",
        )
        _flag(parser, "request_timeout_s", type=float, default=API_DEFAULTS["timeout_s"])
        _flag(
            parser,
            "max_attempts",
            type=int,
            default=API_DEFAULTS["max_attempts"],
            help="tries per request (retries + 1)",
        )
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
        **_request_settings(opts),
        requests_per_minute=opts.requests_per_minute,
        price_input_per_mtok=opts.price_input_per_mtok,
        price_output_per_mtok=opts.price_output_per_mtok,
        native_video=opts.native_video,
    )


def server_spec(opts: VlbeamOptions) -> ServerSpec:
    """The managed server of `--backend vllm|sglang`, with OCR-suited defaults."""
    frames = opts.max_frames_per_window if "grounding" in parse_tasks(opts.tasks) else 0
    max_len = opts.server_max_model_len or size_model_len(
        max_page_pixels=opts.max_page_pixels,
        max_new_tokens=opts.max_new_tokens,
        frames_per_window=frames,
        pixels_per_frame=opts.max_pixels_per_frame,
    )
    return ServerSpec(
        kind=opts.backend,
        model=resolve_model_path(opts.model),
        server_python=opts.server_python,
        command_template=opts.server_command,
        extra_args=tuple(opts.server_arg or ()),
        tensor_parallel_size=opts.tensor_parallel_size,
        max_model_len=max_len,
        images_per_prompt=max(1, frames),
        gpu_memory_utilization=opts.gpu_memory_utilization,
        start_timeout_s=opts.server_start_timeout_s,
        max_restarts=opts.max_server_restarts,
    )


def server_api_config(opts: VlbeamOptions) -> ApiConfig:
    """How the engine talks to a managed server (its URL is known only once it runs)."""
    return api_config_from_preset(
        "openai",
        base_url="http://127.0.0.1/v1",  # replaced by each server's own base URL
        model=opts.model,
        api_key_env="",
        **_request_settings(opts),
    )


def _request_settings(opts: VlbeamOptions) -> dict:
    """What every OpenAI-compatible request and its engine take from the flags."""
    return {
        "max_tokens": opts.max_new_tokens,
        "temperature": opts.temperature,
        "top_p": opts.top_p,
        "seed": opts.seed,
        "stream": opts.stream,
        "max_concurrency": opts.max_concurrency,
        "timeout_s": opts.request_timeout_s,
        "max_attempts": opts.max_attempts,
    }


def video_config(opts: VlbeamOptions) -> VideoConfig:
    return VideoConfig(
        window_s=opts.window_seconds,
        overlap_s=opts.window_overlap_seconds,
        sampling=SamplingConfig(
            fps=opts.fps,
            max_frames=opts.max_frames_per_window,
            max_pixels=opts.max_pixels_per_frame,
            mode=opts.sampling,
        ),
        timeout_s=opts.decode_timeout_s,
        max_memory_mb=opts.render_memory_mb,
    )


def render_config(opts: VlbeamOptions) -> RenderConfig:
    cfg = RenderConfig(
        renderer=opts.pdf_renderer,
        target_long_side=opts.target_long_side,
        max_pixels=opts.max_page_pixels,
        timeout_s=opts.render_timeout_s,
        max_memory_mb=opts.render_memory_mb,
        image_format=opts.page_image_format,
        password=opts.pdf_password,
        pages_per_task=opts.pages_per_task,
        workers=opts.render_workers,
        password_env=opts.pdf_password_env or None,
        passwords_file=opts.pdf_passwords_file or None,
    )
    for warning in check_password_sources(cfg):  # fails here on an unreadable passwords file
        logger.warning("%s", warning)
    return cfg


def model_config(opts: VlbeamOptions) -> ModelConfig:
    return ModelConfig(
        model=opts.model,
        device=opts.device,
        dtype=opts.dtype,
        max_new_tokens=opts.max_new_tokens,
        max_batch_size=opts.max_batch_size or ModelConfig.max_batch_size,
        max_batch_pixels=opts.max_batch_pixels,
        max_batch_duration_secs=opts.max_batch_duration_secs,
        attn_implementation=opts.attn_implementation,
    )


def page_policy(opts: VlbeamOptions) -> PagePolicy:
    return PagePolicy(opts.text_layer_policy, opts.retry_degenerate)


def parse_tasks(value: str) -> frozenset[str]:
    tasks = frozenset(t.strip() for t in value.split(",") if t.strip())
    unknown = tasks - set(TASKS)
    if not tasks or unknown:
        raise ValueError(f"--tasks must name some of {TASKS}, got {value!r}")
    return tasks


# ---------------------------------------------------------------- unknown flags


def _known_option_actions() -> dict:
    """Option string → argparse action, for every flag of every registered `PipelineOptions`
    subclass (vlbeam's own and Beam's: runners, filesystems, Dataflow, Flink, ...)."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    seen: dict[str, type] = {}
    pending = list(PipelineOptions.__subclasses__())
    while pending:
        cls = pending.pop(0)
        if str(cls) not in seen:  # a class defined twice (main session) is added once
            seen[str(cls)] = cls
            cls._add_argparse_args(parser)
        pending.extend(cls.__subclasses__())
    return {name: action for action in parser._actions for name in action.option_strings}


def _looks_like_flag(token: str) -> bool:
    """Whether argparse would read `token` as an option (a negative number is a value)."""
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def _scan_flags(argv: list[str], known: dict) -> tuple[list[str], int]:
    """(unknown flag names in order, count of stray values that follow no flag).

    Values are consumed as argparse would (one for a plain flag, none for a switch, any
    number for nargs `*`/`+`); values after an unknown flag count as its own. Only names
    are ever returned: a value may be a secret."""
    unknown: list[str] = []
    stray, i, n = 0, 0, len(argv)
    while i < n:
        token = argv[i]
        i += 1
        if token == "--":  # everything after it is positional: vlbeam takes none
            stray += n - i
            break
        if not _looks_like_flag(token):
            stray += 1
            continue
        name, has_value, _ = token.partition("=")
        action = known.get(name)
        if action is None:
            if name not in unknown:
                unknown.append(name)
            while not has_value and i < n and not _looks_like_flag(argv[i]):
                i += 1  # its values, never shown
            continue
        nargs = action.nargs
        if has_value or nargs == 0:
            continue
        if nargs is None or nargs == "?":
            want = 1
        elif isinstance(nargs, int):
            want = nargs
        else:  # "*", "+", argparse.REMAINDER
            want = n
        while want and i < n and not _looks_like_flag(argv[i]):
            i, want = i + 1, want - 1
    return unknown, stray


def unknown_flags(argv: list[str]) -> list[str]:
    """Names of the flags in `argv` that no registered PipelineOptions class knows (vlbeam's
    own flags in both spellings, and every Beam and runner flag, pass). Names only."""
    return _scan_flags(list(argv), _known_option_actions())[0]


def refuse_unknown_flags(argv: list[str]) -> None:
    """Raise ValueError naming every unknown flag, with the closest known one, before the job
    starts (Beam itself would only log a warning and run with defaults). Values are never
    echoed: a misspelled `--pdf-pasword=...` must not print the password."""
    import difflib

    known = _known_option_actions()
    unknown, stray = _scan_flags(list(argv), known)
    if not unknown and not stray:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"unknown flag {name}{hint}")
    if stray:
        problems.append(f"{stray} argument(s) that follow no flag (values are not shown)")
    raise ValueError(
        "; ".join(problems) + ". See `vlbeam run --help` for vlbeam's flags; Beam and runner "
        "flags (--runner, --project, --temp_location, ...) pass through as they are."
    )
