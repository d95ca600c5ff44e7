"""OpenAI-compatible inference servers (vLLM, SGLang, or any command) run by vlbeam as child
processes of a worker process, for `--backend vllm|sglang` and `--server-command`.

Pure Python and `subprocess`: no Beam, no HTTP client beyond `urllib` for the health check.

- `ServerSpec`: what to start (frozen, validated, hashable: the key of the per-process registry).
- `server_command(spec, host, port)`: the exact argv (vLLM `vllm serve` /
  `python -m vllm.entrypoints.openai.api_server`, SGLang `python -m sglang.launch_server`, or
  the user's `--server-command` template with `{model}`, `{host}`, `{port}`, `{python}` and
  `{served_model_name}` filled in).
- `ManagedServer`: start on a free port in its own process group, forward its output to this
  module's logger with a prefix (keeping the last lines for error messages), wait until the
  health URL answers 200 (failing fast with the last log lines if the process exits, and within
  `start_timeout_s` if it never answers), restart it (bounded) when it died, and stop it and
  everything it started (SIGTERM to the group, then SIGKILL), idempotently, at `stop()`, at
  interpreter exit, and, through a small watchdog process, even when the worker process is
  killed outright.
- `shared_server(spec)` / `shared_servers(spec)`: one server per spec per process (thread-safe),
  and one per GPU group on a multi-GPU machine (data parallel) unless the tensor-parallel size
  asks for one spanning them (`gpu_groups`).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import http.client
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence

from vlbeam.schemas.flags import flag

logger = logging.getLogger(__name__)

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


class ServerError(RuntimeError):
    """A managed server could not be started, or died and could not be brought back."""


class ServerStartError(ServerError):
    """The server exited before it was ready, or never answered its health URL in time."""


class ServerRestartsExhausted(ServerError):
    """The server died more often than `max_restarts` allows."""


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """What server to run for one model. Frozen and hashable (the registry's key).

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
    become vLLM/SGLang flags; None leaves the server's own default.
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
    host: str = "127.0.0.1"
    port: int | None = None  # None: a free port, chosen at each start
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
    health_path: str = "/v1/models"
    start_timeout_s: float = flag(
        DEFAULT_START_TIMEOUT_S,
        name="server_start_timeout_s",
        help="vllm/sglang: how long a server may take to load and answer /v1/models",
    )
    stop_timeout_s: float = 30.0
    max_restarts: int = flag(
        3,
        name="max_server_restarts",
        help="vllm/sglang: restarts of a server that died before the worker gives up",
    )
    log_lines: int = 200
    env: tuple[tuple[str, str], ...] = ()
    name: str | None = None  # log prefix; default "<kind>"

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
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"port must be within 1..65535, got {self.port}")
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
        if not self.health_path.startswith("/"):
            raise ValueError(f"health_path must start with '/', got {self.health_path!r}")
        if self.start_timeout_s <= 0 or self.stop_timeout_s <= 0:
            raise ValueError("start_timeout_s and stop_timeout_s must be > 0")
        if self.max_restarts < 0 or self.log_lines < 1:
            raise ValueError("max_restarts must be >= 0 and log_lines >= 1")

    @property
    def model_name(self) -> str:
        """The name requests must carry as `model` (what the server serves the model as)."""
        return self.served_model_name or self.model

    @property
    def label(self) -> str:
        return self.name or self.kind


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


_SECRET_FLAG = re.compile(r"^--?[\w-]*(key|token|secret|password)[\w-]*$", re.IGNORECASE)
_ACCESS_LOG = re.compile(r'"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) \S+ HTTP/[\d.]+" \d{3}')


def redact_command(argv: Sequence[str]) -> list[str]:
    """The command for logs and messages: values of flags named like a key, token, secret or
    password (`--api-key K`, `--api-key=K`) are masked."""
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            out.append("***")
            mask_next = False
            continue
        name, eq, _value = arg.partition("=")
        if _SECRET_FLAG.match(name):
            out.append(f"{name}=***" if eq else arg)
            mask_next = not eq
        else:
            out.append(arg)
    return out


def _shown(argv: Sequence[str] | None) -> str:
    return shlex.join(redact_command(argv or []))


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


# ---------------------------------------------------------------- GPUs


def parse_visible_devices(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of ids ("" or "-1": no GPU); None when unset."""
    if value is None:
        return None
    ids = [part.strip() for part in value.split(",") if part.strip()]
    if ids and ids[0].startswith("-"):
        return []
    return ids


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what `nvidia-smi`
    lists, else none."""
    environ = os.environ if environ is None else environ
    ids = parse_visible_devices(environ.get("CUDA_VISIBLE_DEVICES"))
    if ids is not None:
        return ids
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def gpu_groups(gpu_ids: Sequence[str], tensor_parallel_size: int = 1) -> list[tuple[str, ...]]:
    """Split a machine's GPUs between servers: one server per `tensor_parallel_size` GPUs (data
    parallel across groups). `tensor_parallel_size` equal to the GPU count gives one server
    spanning them all. GPUs left over (count not a multiple) stay unused, with a warning."""
    if tensor_parallel_size < 1:
        raise ValueError("tensor_parallel_size must be >= 1")
    ids = list(gpu_ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate GPU ids: {ids}")
    if len(ids) < tensor_parallel_size:
        raise ValueError(
            f"--tensor-parallel-size {tensor_parallel_size} needs {tensor_parallel_size} GPUs, "
            f"this machine has {len(ids)} ({','.join(ids) or 'none'})"
        )
    count = len(ids) // tensor_parallel_size
    left = ids[count * tensor_parallel_size :]
    if left:
        logger.warning(
            "%d GPUs with tensor parallel size %d: GPUs %s stay unused",
            len(ids),
            tensor_parallel_size,
            ",".join(left),
        )
    return [
        tuple(ids[i * tensor_parallel_size : (i + 1) * tensor_parallel_size]) for i in range(count)
    ]


# ---------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    stat = handle.read().decode(errors="replace")
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces and parentheses
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) >= 2 and fields[1].isdigit():
                children[int(fields[1])].append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (from /proc; empty where /proc is missing)."""
    children, found, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _group_alive(pgid: int) -> bool:
    """A process of the group still runs (zombies awaiting their reaper do not count: an init
    that reaps slowly, or not at all, must not hold up a stop)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return True
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) >= 3 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[-1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


# The watchdog outlives the worker process: it blocks reading a pipe only the worker holds, and
# when that pipe closes (the worker exited, however it died) it stops the server's process group.
_WATCHDOG = r"""
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
try:
    sys.stdin.buffer.read()
except BaseException:
    pass
for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        sys.exit(0)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            sys.exit(0)
        time.sleep(0.1)
"""


class ManagedServer:
    """One server process (and everything it starts) owned by this worker process.

    Thread-safe: `start`, `wait_ready`, `restart`, `ensure_running` and `stop` serialise on one
    lock, so concurrent requests that all notice a dead server cause one restart; `stop`
    interrupts a wait for readiness.

    The watchdog fires when every copy of its pipe's write end is closed: this process's, and
    those of processes forked from it without exec (they inherit it), so a server outlives a
    SIGKILLed worker only as long as such forks of it live.
    """

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._watchdog: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=spec.log_lines)
        self._port: int | None = None
        self._command: list[str] | None = None
        self._ready = False
        self._stopped = False
        self._stopping = threading.Event()  # lets stop() interrupt a wait for readiness
        self._owner = os.getpid()
        self.starts = 0
        self.restarts = 0
        _LIVE.add(self)

    # -- what callers read --------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def command(self) -> list[str] | None:
        return list(self._command) if self._command else None

    @property
    def base_url(self) -> str:
        """`http://host:port/v1`, the base URL for the OpenAI-compatible engine (it changes if
        a restart had to take another port: read it again after `ensure_running`)."""
        if self._port is None:
            raise ServerError(f"{self.spec.label} server is not started")
        return f"http://{_url_host(_connect_host(self.spec.host))}:{self._port}/v1"

    @property
    def health_url(self) -> str:
        if self._port is None:
            raise ServerError(f"{self.spec.label} server is not started")
        host = _url_host(_connect_host(self.spec.host))
        return f"http://{host}:{self._port}{self.spec.health_path}"

    @property
    def prefix(self) -> str:
        return f"[{self.spec.label} :{self._port}]"

    def alive(self) -> bool:
        """The server process is running (it may still be loading: see `wait_ready`)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def ready(self) -> bool:
        return self._ready and self.alive()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self._lines)[-lines:])

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ManagedServer:
        """Start the process (without waiting for it to be ready); a no-op when running."""
        with self._lock:
            if self.alive():
                return self
            self._stopped = False
            self._stopping.clear()
            self._launch()
            return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Poll the health URL until it answers 200. Raises `ServerStartError` with the last
        log lines if the process exits first, or if it does not answer within the timeout
        (then the process is stopped)."""
        timeout_s = self.spec.start_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            proc = self._proc
            if proc is None:
                raise ServerError(f"{self.spec.label} server is not started")
            started = time.monotonic()
            deadline = started + timeout_s
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            pause = 0.1
            while True:
                if self._stopping.is_set():
                    raise ServerError(f"{self.spec.label} server was stopped while starting")
                code = proc.poll()
                if code is not None:
                    self._drain()
                    self._ready = False
                    raise ServerStartError(
                        f"{self.spec.label} server exited with code {code} before it answered "
                        f"{self.spec.health_path} (command: {_shown(self._command)}). "
                        f"Last lines of its log:\n{self.log_tail()}"
                    )
                remaining = deadline - time.monotonic()
                if self._probe(opener, min(5.0, max(0.2, remaining))):
                    self._ready = True
                    logger.info(
                        "%s ready at %s after %.1f s",
                        self.prefix,
                        self.base_url,
                        time.monotonic() - started,
                    )
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._terminate()
                    raise ServerStartError(
                        f"{self.spec.label} server did not answer {self.spec.health_path} with "
                        f"200 within {timeout_s:g} s (--server-start-timeout-s); it was stopped. "
                        f"Command: {_shown(self._command)}. "
                        f"Last lines of its log:\n{self.log_tail()}"
                    )
                time.sleep(min(pause, remaining))
                pause = min(1.0, pause * 1.5)

    def start_and_wait(self) -> ManagedServer:
        with self._lock:
            self.start()
            if not self._ready:
                self.wait_ready()
            return self

    def restart(self) -> None:
        """Stop what is left of the server and start it again, waiting until it is ready.
        Each attempt counts against `max_restarts`; past it, `ServerRestartsExhausted`."""
        with self._lock:
            last: BaseException | None = None
            while True:
                if self._stopping.is_set():
                    raise ServerError(f"{self.spec.label} server was stopped")
                if self.restarts >= self.spec.max_restarts:
                    why = f" The last attempt: {last}" if last else ""
                    raise ServerRestartsExhausted(
                        f"{self.spec.label} server died and was restarted {self.restarts} times "
                        f"(--max-server-restarts {self.spec.max_restarts}); giving up.{why}\n"
                        f"Last lines of its log:\n{self.log_tail()}"
                    )
                self.restarts += 1
                code = self._proc.poll() if self._proc else None
                logger.warning(
                    "%s restarting (exit code %s), attempt %d of %d",
                    self.prefix,
                    code,
                    self.restarts,
                    self.spec.max_restarts,
                )
                self._terminate()
                try:
                    self._launch()
                    self.wait_ready()
                    return
                except ServerStartError as exc:
                    last = exc

    def ensure_running(self) -> str:
        """Make sure the server is up: start it the first time, restart it if it died.
        Returns the (current) base URL. Safe to call from many threads at once."""
        with self._lock:
            if self._stopped and self.starts:
                raise ServerError(f"{self.spec.label} server was stopped")
            if self.starts == 0:
                self.start_and_wait()
            elif not self.alive():
                self.restart()
            elif not self._ready:
                self.wait_ready()
            return self.base_url

    def stop(self) -> None:
        """Stop the server and everything it started: SIGTERM to its process group, SIGKILL
        after `stop_timeout_s`. Idempotent; does nothing in a forked child of the owner."""
        if os.getpid() != self._owner:
            return
        self._stopping.set()  # a thread waiting for readiness gives up the lock within a second
        with self._lock:
            self._stopped = True
            self._terminate()

    def __enter__(self) -> ManagedServer:
        return self.start_and_wait()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _choose_port(self) -> int:
        spec = self.spec
        if spec.port is not None:
            return spec.port
        if self._port is not None and _port_is_free(spec.host or "127.0.0.1", self._port):
            return self._port  # keep the base URL stable across restarts when possible
        return free_port(spec.host or "127.0.0.1")

    def _resolve_python(self) -> str | None:
        spec = self.spec
        if spec.server_python or spec.kind != "sglang":
            return spec.server_python
        script = shutil.which("sglang")
        if script:
            with contextlib.suppress(OSError, UnicodeDecodeError), open(script, "rb") as handle:
                first = handle.readline().decode().strip()
                if first.startswith("#!") and "python" in first:
                    return first[2:].strip().split()[0]
        return shutil.which("python3") or "python3"

    def _launch(self) -> None:
        spec = self.spec
        port = self._choose_port()
        command = server_command(spec, spec.host, port, python=self._resolve_python())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(spec.env)}
        if spec.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpu_ids)
        self._port, self._command, self._ready = port, command, False
        self._lines.clear()
        logger.info("%s starting: %s", self.prefix, _shown(command))
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        except OSError as exc:
            hint = ""
            if spec.kind in ("vllm", "sglang") and not spec.command_template:
                hint = (
                    f" Install {spec.kind} (it needs its own environment) and pass "
                    f"--server-python /path/to/that/env/bin/python."
                )
            raise ServerStartError(
                f"could not start the {spec.label} server ({_shown(command)}): {exc}.{hint}"
            ) from None
        self._proc = proc
        self.starts += 1
        self._reader = threading.Thread(
            target=self._forward, args=(proc,), name=f"vlbeam-server-log-{port}", daemon=True
        )
        self._reader.start()
        self._watchdog = self._start_watchdog(proc.pid)

    def _start_watchdog(self, pgid: int) -> subprocess.Popen | None:
        try:
            return subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(pgid), str(self.spec.stop_timeout_s)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not in the group it kills
            )
        except OSError as exc:  # the server still stops at stop() and at exit
            logger.warning("%s no watchdog (%s)", self.prefix, exc)
            return None

    def _forward(self, proc: subprocess.Popen) -> None:
        prefix = self.prefix
        stream = proc.stdout
        if stream is None:
            return
        with contextlib.suppress(ValueError, OSError):
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                line = text.rsplit("\r", 1)[-1]  # progress bars: keep the last state
                if not line.strip():
                    continue
                self._lines.append(line)
                # one access-log line per request would flood the worker's log
                level = logging.DEBUG if _ACCESS_LOG.search(line) else logging.INFO
                logger.log(level, "%s %s", prefix, line)

    def _drain(self) -> None:
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)

    def _probe(self, opener, timeout: float) -> bool:
        try:
            with opener.open(self.health_url, timeout=timeout) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError):
            return False

    def _terminate(self) -> None:
        proc, watchdog = self._proc, self._watchdog
        self._ready = False
        if watchdog is not None:
            with contextlib.suppress(OSError):
                watchdog.kill()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                watchdog.wait(timeout=5)
            with contextlib.suppress(OSError):
                if watchdog.stdin:
                    watchdog.stdin.close()
            self._watchdog = None
        if proc is None:
            return
        pgid = proc.pid
        tree = descendants(pgid) if proc.poll() is None else []
        if proc.poll() is None or _group_alive(pgid):
            logger.info("%s stopping", self.prefix)
            _signal_group(pgid, signal.SIGTERM)
            for pid in tree:  # children that left the group
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.spec.stop_timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None and not _group_alive(pgid):
                    break
                time.sleep(0.1)
            _signal_group(pgid, signal.SIGKILL)
            for pid in tree:
                if _pid_alive(pid):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self._drain()
        with contextlib.suppress(OSError):
            if proc.stdout:
                proc.stdout.close()
        self._proc = None


# ---------------------------------------------------------------- per-process registry

_LIVE: set[ManagedServer] = set()  # every server object made in this process
_REGISTRY: dict[ServerSpec, ManagedServer] = {}
_REGISTRY_LOCK = threading.Lock()


def shared_server(spec: ServerSpec) -> ManagedServer:
    """This process's server for `spec`, started on first use and ready when returned
    (restarted if it died). Every DoFn instance and thread of the process shares it."""
    with _REGISTRY_LOCK:
        server = _REGISTRY.get(spec)
        if server is None:
            server = _REGISTRY[spec] = ManagedServer(spec)
    server.ensure_running()
    return server


def shared_servers(spec: ServerSpec, gpu_ids: Iterable[str] | None = None) -> list[ManagedServer]:
    """Data parallel: one server per group of `spec.tensor_parallel_size` GPUs among
    `gpu_ids` (default: this process's visible GPUs), started together and ready when
    returned. With `spec.gpu_ids` set, or no GPU at all, just `[shared_server(spec)]`."""
    ids = list(visible_gpus() if gpu_ids is None else gpu_ids)
    if spec.gpu_ids is not None or not ids:
        return [shared_server(spec)]
    specs = [
        dataclasses.replace(spec, gpu_ids=group)
        for group in gpu_groups(ids, spec.tensor_parallel_size)
    ]
    with _REGISTRY_LOCK:
        servers = []
        for each in specs:
            if each not in _REGISTRY:
                _REGISTRY[each] = ManagedServer(each)
            servers.append(_REGISTRY[each])
    for server in servers:  # load them all at once, then wait for each
        with server._lock:
            if server.starts == 0:
                server.start()
    for server in servers:
        server.ensure_running()
    return servers


def discard_server(server: ManagedServer) -> None:
    """Stop one server and forget it: the next `shared_server` for its spec starts anew."""
    with _REGISTRY_LOCK:
        for spec, known in list(_REGISTRY.items()):
            if known is server:
                del _REGISTRY[spec]
    server.stop()


def stop_all() -> None:
    """Stop every server this process started (registered with atexit)."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()
    with _REGISTRY_LOCK:
        _REGISTRY.clear()


def _forget_in_child() -> None:  # a forked child owns none of its parent's servers
    global _REGISTRY_LOCK
    _LIVE.clear()
    _REGISTRY.clear()
    _REGISTRY_LOCK = threading.Lock()


atexit.register(stop_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
