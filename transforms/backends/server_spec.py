"""What a managed inference server is, and the command that starts it: pure (no process, no
network), imported by the options to validate flags before any server runs.

- `ServerSpec`: what to start (frozen, validated, hashable).
- `server_command(spec, host, port)`: the exact argv (vLLM `vllm serve` /
  `python -m vllm.entrypoints.openai.api_server`, SGLang `python -m sglang.launch_server`, or
  the user's `--server-command` template with `{model}`, `{host}`, `{port}`, `{python}` and
  `{served_model_name}` filled in).
- `size_model_len(...)`: a max model length that holds the largest request of a job.

The process that runs a spec is `managed_server.ManagedServer`; how a machine's GPUs are split
between servers is `gpu_groups`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
import sys
from collections.abc import Mapping

from vlbeam.schemas.flags import flag

KINDS = ("vllm", "sglang", "command")
PLACEHOLDERS = ("model", "host", "port", "python", "served_model_name")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# OCR-suited defaults (each one a ServerSpec field, so each can be overridden).
# A page is at most 2 x 1288^2 px (RenderConfig.max_pixels): ~3,240 visual tokens at Qwen3-VL's
# 32 x 32 px per token, plus the prompt and a 2,048-token answer (ModelConfig.max_new_tokens),
# fit in 8,192 with room to spare. Video windows need more: see `size_model_len`.
DEFAULT_MAX_MODEL_LEN = 8192
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
# Cold starts compile kernels, capture CUDA graphs and may download weights: be generous.
DEFAULT_START_TIMEOUT_S = 1200.0
PIXELS_PER_TOKEN = 32 * 32  # Qwen3-VL: 16 px patches, 2 x 2 merged into one token


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """What server to run for one model: what the user's flags set, and the OCR defaults the
    command is built from. Frozen and hashable. How the process is run and watched (host,
    port, health path, stop timeout, log buffer, log prefix) is `ProcessTunables` in
    `managed_server`, which only tests and benches change.

    `kind`: "vllm", "sglang", or "command" (then `command_template` is the whole command).
    `command_template` replaces the whole command for any kind when set: a shell-like string
    with `{model}`, `{host}`, `{port}` (required), `{python}` (this interpreter) and
    `{served_model_name}`; other braces (JSON in an argument) are left alone.
    `server_python`: an interpreter with vLLM/SGLang installed (default: `vllm` on PATH; for
    SGLang the interpreter of the `sglang` script on PATH, else `python3`).
    `extra_args`: appended to the command as given (`--server-arg`).
    `gpu_ids`: the GPUs this server sees (CUDA_VISIBLE_DEVICES); None inherits the worker's.
    The OCR defaults (`max_model_len`, `images_per_prompt`, `videos_per_prompt`,
    `gpu_memory_utilization`, `prefix_caching`, `mm_processor_cache_gb`, `served_model_name`)
    become vLLM/SGLang flags; None leaves the server's own default. `env`: variables set for
    the server process (a dict or pairs).
    """

    kind: str
    model: str
    served_model_name: str | None = None
    server_python: str | None = flag(
        None,
        help="vllm/sglang: an interpreter with vLLM or SGLang installed (default: the vllm "
        "or sglang on PATH)",
    )
    command_template: str | None = flag(
        None,
        name="server_command",
        help="vllm/sglang: replace the whole server command; {model}, {host}, {port} and "
        "{python} are filled in (any OpenAI-compatible server)",
    )
    extra_args: tuple[str, ...] = flag(
        (),
        name="server_arg",
        help="vllm/sglang: an extra argument for the server command; repeatable",
    )
    tensor_parallel_size: int = flag(
        1, help="vllm/sglang: GPUs per server (default 1: one server per GPU, data parallel)"
    )
    gpu_ids: tuple[str, ...] | None = None
    max_model_len: int | None = flag(
        DEFAULT_MAX_MODEL_LEN,
        name="server_max_model_len",
        flag_default=None,  # None: sized for the job (size_model_len)
        help="vllm/sglang: context length (default: sized for a page, or for a video "
        "window at --max-frames-per-window when grounding)",
    )
    images_per_prompt: int | None = 1
    videos_per_prompt: int | None = 0
    gpu_memory_utilization: float | None = flag(
        DEFAULT_GPU_MEMORY_UTILIZATION,
        help="vllm/sglang: share of GPU memory the server may take",
    )
    prefix_caching: bool = False
    mm_processor_cache_gb: float | None = 0.0
    dtype: str | None = None
    start_timeout_s: float = flag(
        DEFAULT_START_TIMEOUT_S,
        name="server_start_timeout_s",
        help="vllm/sglang: how long a server may take to load and answer /v1/models",
    )
    max_restarts: int = flag(
        3,
        name="max_server_restarts",
        help="vllm/sglang: restarts of a server that died (or hung) within "
        "--server-restart-window-s before the worker's engine gives up (its breaker opens)",
    )
    restart_window_s: float = flag(
        600.0,
        name="server_restart_window_s",
        help="vllm/sglang: the window --max-server-restarts counts restarts in (older ones "
        "are forgiven)",
    )
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Accept lists and dicts from callers, store tuples (hashable).
        object.__setattr__(self, "extra_args", tuple(str(a) for a in self.extra_args))
        env = self.env.items() if isinstance(self.env, Mapping) else self.env
        object.__setattr__(self, "env", tuple((str(k), str(v)) for k, v in env))
        if self.gpu_ids is not None:
            object.__setattr__(self, "gpu_ids", tuple(str(g).strip() for g in self.gpu_ids))
        if self.kind not in KINDS:
            raise ValueError(f"server kind must be one of {KINDS}, got {self.kind!r}")
        if not self.model:
            raise ValueError("a managed server needs a model")
        if self.kind == "command" and not self.command_template:
            raise ValueError("a 'command' server needs --server-command TEMPLATE")
        if self.command_template is not None:
            _check_template(self.command_template)
        if self.server_python is not None and not self.server_python.strip():
            raise ValueError("--server-python must be a path to an interpreter")
        if self.tensor_parallel_size < 1:
            raise ValueError("--tensor-parallel-size must be >= 1")
        if self.gpu_ids is not None:
            if any(not g for g in self.gpu_ids) or len(set(self.gpu_ids)) != len(self.gpu_ids):
                raise ValueError(f"gpu ids must be distinct and non-empty: {self.gpu_ids}")
            if self.kind != "command" and len(self.gpu_ids) != self.tensor_parallel_size:
                raise ValueError(
                    f"a server with tensor parallel size {self.tensor_parallel_size} needs "
                    f"exactly that many GPUs, got {list(self.gpu_ids)}"
                )
        if self.max_model_len is not None and self.max_model_len < 256:
            raise ValueError("max_model_len must be >= 256 tokens")
        for field in ("images_per_prompt", "videos_per_prompt"):
            value = getattr(self, field)
            if value is not None and value < 0:
                raise ValueError(f"{field} must be >= 0")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be within (0, 1]")
        if self.mm_processor_cache_gb is not None and self.mm_processor_cache_gb < 0:
            raise ValueError("mm_processor_cache_gb must be >= 0")
        if self.start_timeout_s <= 0:
            raise ValueError("start_timeout_s must be > 0")
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        if self.restart_window_s <= 0:
            raise ValueError("restart_window_s must be > 0")

    @property
    def model_name(self) -> str:
        """The name requests must carry as `model` (what the server serves the model as)."""
        return self.served_model_name or self.model


def _check_template(template: str) -> None:
    try:
        tokens = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"--server-command is not a valid command line: {exc}") from None
    if not tokens:
        raise ValueError("--server-command is empty")
    names = {m.group(1) for token in tokens for m in _PLACEHOLDER.finditer(token)}
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise ValueError(
            f"--server-command has unknown placeholders {unknown}; known: {list(PLACEHOLDERS)}"
        )
    if "port" not in names:
        raise ValueError("--server-command must contain {port} (vlbeam chooses the port)")


def fill_template(template: str, values: Mapping[str, str]) -> list[str]:
    """Split a command template like a shell would, then fill the known placeholders in each
    argument (so a model path with spaces stays one argument)."""

    def sub(match: re.Match) -> str:
        name = match.group(1)
        return values[name] if name in PLACEHOLDERS else match.group(0)

    return [_PLACEHOLDER.sub(sub, token) for token in shlex.split(template)]


def _number(value: float) -> str:
    return f"{value:g}"


def server_command(
    spec: ServerSpec, host: str, port: int, *, python: str | None = None
) -> list[str]:
    """The argv that starts `spec`'s server listening on host:port.

    `python` is the interpreter for SGLang (and `{python}` in templates) when
    `spec.server_python` is not set; it defaults to "python3" for SGLang and to this
    interpreter for templates.
    """
    if spec.command_template:
        values = {
            "model": spec.model,
            "host": host,
            "port": str(port),
            "python": spec.server_python or python or sys.executable,
            "served_model_name": spec.model_name,
        }
        return [*fill_template(spec.command_template, values), *spec.extra_args]
    limits = {}
    if spec.images_per_prompt is not None:
        limits["image"] = spec.images_per_prompt
    if spec.videos_per_prompt is not None:
        limits["video"] = spec.videos_per_prompt
    limits_json = json.dumps(limits, separators=(",", ":"))
    if spec.kind == "vllm":
        if spec.server_python:
            argv = [spec.server_python, "-m", "vllm.entrypoints.openai.api_server"]
            argv += ["--model", spec.model]
        else:
            argv = ["vllm", "serve", spec.model]
        argv += ["--host", host, "--port", str(port), "--served-model-name", spec.model_name]
        if spec.max_model_len is not None:
            argv += ["--max-model-len", str(spec.max_model_len)]
        if limits:
            argv += ["--limit-mm-per-prompt", limits_json]
        if spec.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", _number(spec.gpu_memory_utilization)]
        argv += ["--enable-prefix-caching" if spec.prefix_caching else "--no-enable-prefix-caching"]
        if spec.mm_processor_cache_gb is not None:
            argv += ["--mm-processor-cache-gb", _number(spec.mm_processor_cache_gb)]
        if spec.tensor_parallel_size > 1:
            argv += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
        if spec.dtype:
            argv += ["--dtype", spec.dtype]
    else:  # sglang
        interpreter = spec.server_python or python or "python3"
        argv = [interpreter, "-m", "sglang.launch_server", "--model-path", spec.model]
        argv += ["--host", host, "--port", str(port), "--served-model-name", spec.model_name]
        if spec.max_model_len is not None:
            argv += ["--context-length", str(spec.max_model_len)]
        if limits:
            argv += ["--limit-mm-data-per-request", limits_json]
        if spec.gpu_memory_utilization is not None:
            argv += ["--mem-fraction-static", _number(spec.gpu_memory_utilization)]
        if not spec.prefix_caching:
            argv += ["--disable-radix-cache"]
        # SGLang's multimodal caches (enable_prefix_mm_cache, enable_mm_global_cache) are off
        # by default: nothing to pass for mm_processor_cache_gb.
        if spec.tensor_parallel_size > 1:
            argv += ["--tp-size", str(spec.tensor_parallel_size)]
        if spec.dtype:
            argv += ["--dtype", spec.dtype]
    return [*argv, *spec.extra_args]


def size_model_len(
    *,
    max_page_pixels: int = 2 * 1288 * 1288,
    max_new_tokens: int = 2048,
    frames_per_window: int = 0,
    pixels_per_frame: int = 448 * 448,
    prompt_tokens: int = 512,
    tokens_per_frame_text: int = 12,
) -> int:
    """A max model length that holds the largest request a job sends and its answer: a page
    (its visual tokens) or a video window (each frame sent as an image, with its `<t seconds>`
    text), plus the prompt and `max_new_tokens`, rounded up to a multiple of 1,024."""
    page = math.ceil(max_page_pixels / PIXELS_PER_TOKEN)
    window = frames_per_window * (math.ceil(pixels_per_frame / PIXELS_PER_TOKEN) + 2)
    window += frames_per_window * tokens_per_frame_text
    need = max(page, window) + prompt_tokens + max_new_tokens
    return max(1024, math.ceil(need / 1024) * 1024)
