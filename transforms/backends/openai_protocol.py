"""OpenAI-compatible HTTP APIs for Qwen3-VL: request styles, provider presets, and the pure
functions that build request bodies and read responses (no I/O here).

Styles:
- `chat`: POST {base}/chat/completions with `messages` of text and `image_url` parts
  (DashScope, OpenRouter, Vercel AI Gateway, AIML API, vLLM/SGLang, `transformers serve`).
- `completions`: POST {base}/completions with a raw Qwen chat `prompt` in which each
  `<|vision_start|><|image_pad|><|vision_end|>` stands for one entry of `images`.
- `images_prompt`: POST {base} (the full endpoint) with `images` + `prompt`
  (the Qwen3-VL-Flash form).
Video goes as images interleaved with `<t seconds>` text before each frame.

Why one file of over 500 lines: the provider presets, the config their flags set and the
body builders that read both are one table of provider differences, kept side by side so a
provider's quirks are read (and reviewed) in one place.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vlbeam.schemas.elements import VLRequest
from vlbeam.schemas.flags import flag, same_flag

STYLES = ("chat", "completions", "images_prompt")
STRUCTURED_OUTPUTS = ("json_schema", "json_object", "none")
VISION_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_STOP = ("<|im_end|>", "<|endoftext|>")


@dataclass(frozen=True)
class Preset:
    """What a provider needs: where to send, which model by default, which extra body
    fields it documents (anything else in --extra-body is refused), list prices."""

    name: str
    base_url: str | None
    model: str | None
    api_key_env: str | None
    style: str = "chat"
    extra_fields: frozenset[str] = frozenset()
    max_tokens_field: str = "max_tokens"
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    max_stop: int | None = None
    min_seed: int | None = None
    native_video: bool = False  # documents a frame-list video content part
    # --extract: what `response_format` the provider documents for the Qwen-VL models:
    # json_schema (the answer constrained to the schema), json_object (any JSON object; the
    # schema goes in the prompt), or none (prompt + validate + retry only)
    structured_output: str = "json_schema"


_CHAT_COMMON = frozenset({"temperature", "top_p", "stop", "seed", "stream", "response_format"})

PRESETS: dict[str, Preset] = {
    # Any /v1/chat/completions server: vLLM, SGLang, `transformers serve`, gateways.
    "openai": Preset(
        "openai",
        base_url=None,
        model=None,
        api_key_env="OPENAI_API_KEY",
        extra_fields=_CHAT_COMMON | {"frequency_penalty", "presence_penalty", "top_k"},
    ),
    "dashscope": Preset(
        "dashscope",
        base_url="https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        model="qwen3-vl-flash",
        api_key_env="DASHSCOPE_API_KEY",
        extra_fields=_CHAT_COMMON
        | {"vl_high_resolution_images", "enable_thinking", "thinking_budget"},
        native_video=True,
        # json_schema is documented for some text models only (qwen-plus family), not VL
        structured_output="json_object",
    ),
    "openrouter": Preset(
        "openrouter",
        base_url="https://openrouter.ai/api/v1",
        model="qwen/qwen3-vl-235b-a22b-thinking",
        api_key_env="OPENROUTER_API_KEY",
        extra_fields=_CHAT_COMMON | {"reasoning", "provider", "usage"},
    ),
    "vercel": Preset(
        "vercel",
        base_url="https://ai-gateway.vercel.sh/v1",
        model="alibaba/qwen3-vl-instruct",
        api_key_env="AI_GATEWAY_API_KEY",
        extra_fields=_CHAT_COMMON | {"providerOptions"},
    ),
    "aimlapi": Preset(
        "aimlapi",
        base_url="https://api.aimlapi.com/v1",
        model="alibaba/qwen3-vl-32b-instruct",
        api_key_env="AIMLAPI_API_KEY",
        extra_fields=_CHAT_COMMON | {"repetition_penalty"},
        max_tokens_field="max_completion_tokens",
        max_stop=4,
        min_seed=1,
        structured_output="none",  # nothing documented for the Qwen-VL models
    ),
}


def parse_headers(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--api-header NAME=VALUE` values as (name, value) pairs; never the Authorization header
    (the key comes from --api-key-env only)."""
    headers = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--api-header must be NAME=VALUE, got {item!r}")
        if name.strip().lower() == "authorization":
            raise ValueError("the Authorization header comes from --api-key-env only")
        headers.append((name.strip(), value.strip()))
    return tuple(headers)


@dataclass(frozen=True)
class ApiRouting:
    """Shortcuts into a provider's extra body fields: provider routing order (Vercel AI
    Gateway, OpenRouter) and OpenRouter's reasoning effort."""

    provider_order: str | None = flag(
        None, help="Vercel AI Gateway / OpenRouter provider routing order, comma-separated"
    )
    reasoning_effort: str | None = flag(
        None,
        choices=["low", "medium", "high"],
        help="OpenRouter reasoning effort for thinking models",
    )

    def apply(self, provider: str, extra: dict) -> dict:
        """`extra` (a request's extra body) with these fields set where `provider` reads them."""
        if self.provider_order:
            order = [p.strip() for p in self.provider_order.split(",") if p.strip()]
            if provider == "vercel":
                extra.setdefault("providerOptions", {}).setdefault("gateway", {})["order"] = order
            else:
                extra.setdefault("provider", {})["order"] = order
        if self.reasoning_effort:
            extra.setdefault("reasoning", {})["effort"] = self.reasoning_effort
        return extra


@dataclass(frozen=True)
class ApiConfig:
    """Everything a worker needs to call the API. Holds the *name* of the environment
    variable with the key, never the key itself (Beam pickles this to every worker)."""

    provider: str = flag(
        flag_default="openai",
        choices=sorted(PRESETS),
        help="API preset: base URL, default model, allowed extra fields",
    )
    base_url: str = flag(flag_default=None, help="API base URL, e.g. http://host:8000/v1")
    model: str = flag(name="api_model", flag_default=None, help="model name sent to the API")
    style: str = flag(
        "chat",
        name="api_style",
        flag_default=None,  # None: the preset's
        choices=STYLES,
        help="request style (default: the preset's; chat for all built-in presets)",
    )
    api_key_env: str | None = flag(
        None,
        help="environment variable holding the API key ('' for none); the key itself is "
        "never a flag",
    )
    extra_body: str = flag("{}", help="JSON object merged into every request")
    headers: tuple[tuple[str, str], ...] = flag(
        (),
        name="api_header",
        convert=parse_headers,
        help="extra request header NAME=VALUE (e.g. HTTP-Referer, X-Title); repeatable",
    )
    max_tokens: int = same_flag("max_new_tokens", 2048)
    max_tokens_field: str = "max_tokens"
    temperature: float | None = flag(0.0)
    top_p: float | None = flag(None)
    seed: int | None = flag(None)
    stop: tuple[str, ...] = ()
    stream: bool = flag(False, help="use server-sent events (streaming) for API requests")
    max_concurrency: int = flag(32, help="concurrent API requests per worker process")
    requests_per_minute: float | None = flag(None, help="rate limit per worker process")
    timeout_s: float = flag(300.0, name="request_timeout_s")
    max_attempts: int = flag(6, help="tries per request (retries + 1)")
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    price_input_per_mtok: float | None = flag(
        None, help="USD per million input tokens (for cost columns and the summary)"
    )
    price_output_per_mtok: float | None = flag(None)
    auth_failures_to_abort: int = 8
    native_video: bool = flag(
        False,
        help="send video windows as the provider's frame-list video part (dashscope); only "
        "windows that start at 0 s with evenly spaced frames, since the server derives times "
        "from fps; other windows keep a <t seconds> text before each frame",
    )

    structured_output: str = "json_schema"  # the preset's (see `Preset`)

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"api style must be one of {STYLES}")
        if self.structured_output not in STRUCTURED_OUTPUTS:
            raise ValueError(f"structured_output must be one of {STRUCTURED_OUTPUTS}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"--base-url must be an http(s) URL, got {self.base_url!r}")
        if not self.model:
            raise ValueError("an API model name is needed (--api-model)")
        body = json.loads(self.extra_body)
        if not isinstance(body, dict):
            raise ValueError("--extra-body must be a JSON object")
        if self.max_concurrency < 1 or self.max_attempts < 1 or self.timeout_s <= 0:
            raise ValueError("max_concurrency, max_attempts >= 1 and timeout_s > 0")
        if self.requests_per_minute is not None and self.requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")

    @property
    def extra_body_dict(self) -> dict:
        return json.loads(self.extra_body)

    def endpoint(self) -> str:
        base = self.base_url.rstrip("/")
        if self.style == "chat":
            return f"{base}/chat/completions"
        if self.style == "completions":
            return f"{base}/completions"
        return base

    def cost_usd(self, input_tokens: int | None, output_tokens: int | None) -> float | None:
        if self.price_input_per_mtok is None or self.price_output_per_mtok is None:
            return None
        if input_tokens is None and output_tokens is None:
            return None  # the server reported no usage: unknown, not free
        return (
            (input_tokens or 0) * self.price_input_per_mtok
            + (output_tokens or 0) * self.price_output_per_mtok
        ) / 1e6


def api_config_from_preset(
    provider: str,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    style: str | None = None,
    extra_body: dict | None = None,
    **overrides,
) -> ApiConfig:
    """A preset's values, each overridable; extra body fields must be ones the provider
    documents (a typo fails at launch, not on every request)."""
    if provider not in PRESETS:
        raise ValueError(f"--provider must be one of {sorted(PRESETS)}")
    preset = PRESETS[provider]
    extra = dict(extra_body or {})
    if overrides.get("native_video") and not preset.native_video:
        raise ValueError(f"--provider {provider} documents no native video input")
    unknown = set(extra) - preset.extra_fields - {preset.max_tokens_field}
    if unknown and provider != "openai":
        raise ValueError(
            f"--extra-body fields {sorted(unknown)} are not documented for provider {provider!r} "
            f"(allowed: {sorted(preset.extra_fields)})"
        )
    url = base_url or preset.base_url
    if not url:
        raise ValueError(f"--provider {provider} needs --base-url (e.g. http://host:8000/v1)")
    for seed in (overrides.get("seed"), extra.get("seed")):
        if preset.min_seed is not None and seed is not None and seed < preset.min_seed:
            raise ValueError(f"{provider} needs seed >= {preset.min_seed}")
    for stop in (overrides.get("stop"), extra.get("stop")):
        stops = [stop] if isinstance(stop, str) else list(stop or ())
        if preset.max_stop is not None and len(stops) > preset.max_stop:
            raise ValueError(f"{provider} takes at most {preset.max_stop} stop sequences")
    prices = {}
    for name in ("price_input_per_mtok", "price_output_per_mtok"):
        given = overrides.pop(name, None)
        prices[name] = getattr(preset, name) if given is None else given  # 0 is a price
    return ApiConfig(
        provider=provider,
        base_url=url,
        model=model or preset.model or "",
        style=style or preset.style,
        api_key_env=api_key_env if api_key_env is not None else preset.api_key_env,
        extra_body=json.dumps(extra, sort_keys=True),
        max_tokens_field=preset.max_tokens_field,
        structured_output=overrides.pop("structured_output", preset.structured_output),
        **prices,
        **overrides,
    )


def data_uri(image: bytes) -> str:
    mime = "image/png" if image.startswith(b"\x89PNG") else (
        "image/webp" if image[8:12] == b"WEBP" else "image/jpeg"
    )  # fmt: skip
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def timestamp_text(seconds: float) -> str:
    """How a frame's time is written before it: the form Qwen3-VL reads, `<12.5 seconds>`."""
    return f"<{seconds:.1f} seconds>"


def even_fps(times: Sequence[float], tolerance_s: float = 0.01) -> float | None:
    """The frame rate of evenly spaced frame times (None if they are not evenly spaced)."""
    if len(times) < 2:
        return None
    step = (times[-1] - times[0]) / (len(times) - 1)
    if step <= 0 or any(abs(b - a - step) > tolerance_s for a, b in itertools.pairwise(times)):
        return None
    return 1.0 / step


def chat_content(request: VLRequest, native_video: bool = False) -> list[dict]:
    """Content parts. Video: each frame preceded by its `<t seconds>` text, which every chat
    API accepts; with `native_video`, evenly spaced frames go as one frame-list video part
    (DashScope's form; the server derives times from `fps`, so uneven frames never do)."""
    times = request.frame_times_s
    fps = even_fps(times) if native_video and times else None
    if fps is not None and times[0] < 0.05:
        return [
            {"type": "video", "video": [data_uri(image) for image in request.images], "fps": fps},
            {"type": "text", "text": request.prompt},
        ]
    parts: list[dict] = []
    prompt = {"type": "text", "text": request.prompt}
    if request.prompt_first:  # olmOCR's order: the text part, then the image part
        parts.append(prompt)
    for i, image in enumerate(request.images):
        if request.frame_times_s is not None:
            parts.append({"type": "text", "text": timestamp_text(request.frame_times_s[i])})
        parts.append({"type": "image_url", "image_url": {"url": data_uri(image)}})
    if not request.prompt_first:
        parts.append(prompt)
    return parts


def raw_prompt(request: VLRequest) -> str:
    """A raw Qwen chat string with one vision placeholder per image (`completions` style)."""
    pieces = []
    for i in range(len(request.images)):
        if request.frame_times_s is not None:
            pieces.append(timestamp_text(request.frame_times_s[i]))
        pieces.append(VISION_PLACEHOLDER)
    user = (
        request.prompt + "".join(pieces)
        if request.prompt_first
        else "".join(pieces) + request.prompt
    )
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def build_body(cfg: ApiConfig, request: VLRequest, *, stream: bool | None = None) -> dict:
    """The JSON body of one request, in the configured style."""
    stream = cfg.stream if stream is None else stream
    body: dict = {"model": cfg.model}
    if cfg.style == "chat":
        content = chat_content(request, cfg.native_video)
        body["messages"] = [{"role": "user", "content": content}]
    elif cfg.style == "completions":
        body["prompt"] = raw_prompt(request)
        body["images"] = [data_uri(image) for image in request.images]
    else:
        body["images"] = [data_uri(image) for image in request.images]
        prompt = request.prompt
        if request.frame_times_s is not None:
            times = ", ".join(f"{t:.1f}" for t in request.frame_times_s)
            prompt = f"The images are video frames at these times (seconds): {times}.\n{prompt}"
        body["prompt"] = prompt
    body[cfg.max_tokens_field] = request.max_new_tokens or cfg.max_tokens
    temperature = cfg.temperature if request.temperature is None else request.temperature
    if temperature is not None:
        body["temperature"] = temperature
    if cfg.top_p is not None:
        body["top_p"] = cfg.top_p
    if cfg.seed is not None:
        body["seed"] = cfg.seed
    stop = list(cfg.stop) or (list(QWEN_STOP) if cfg.style == "completions" else [])
    if stop:
        body["stop"] = stop
    if stream:
        body["stream"] = True
        if cfg.style == "chat":
            body["stream_options"] = {"include_usage": True}
    body.update(cfg.extra_body_dict)
    if request.json_schema is not None:
        body.update(structured_output_fields(cfg, request.json_schema))
    return body


def guided_mechanism(cfg: ApiConfig) -> str:
    """What constrains an --extract answer sent with `cfg` (the `extractions.guided` column):
    the chat `response_format` the provider documents, or none (the schema is only in the
    prompt; the answer is validated and retried)."""
    if cfg.style != "chat" or cfg.structured_output == "none":
        return "none"
    return f"response_format:{cfg.structured_output}"


def structured_output_fields(cfg: ApiConfig, json_schema: str) -> dict:
    """The request fields that constrain the answer to `json_schema` (canonical JSON text).

    Chat `response_format` is what vLLM (every version since ~0.6; its own
    `structured_outputs: {"json": ...}` replaced `guided_json`, which v0.12+ silently ignores,
    so it is never sent), SGLang (`json_schema` → its grammar backend), OpenRouter and the
    Vercel gateway document; DashScope documents `json_object` only for the VL models."""
    mechanism = guided_mechanism(cfg)
    if mechanism == "response_format:json_schema":
        schema = json.loads(json_schema)
        name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "extraction"))[:64]
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            }
        }
    if mechanism == "response_format:json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


@dataclass(frozen=True)
class ApiAnswer:
    text: str
    reasoning: str | None
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    served_model: str | None
    request_id: str | None


_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)


def split_thinking(text: str) -> tuple[str, str | None]:
    """Separate `<think>…</think>` reasoning from the answer text."""
    if "<think>" not in text and "</think>" not in text:
        return text, None
    if "<think>" not in text:  # some servers drop the opening tag
        reasoning, _, answer = text.partition("</think>")
        return answer.strip(), reasoning.strip() or None
    reasoning = "\n".join(m.strip() for m in _THINK.findall(text)).strip()
    return _THINK.sub("", text).strip(), reasoning or None


def _usage(payload: dict) -> tuple[int | None, int | None]:
    usage = payload.get("usage") or (payload.get("meta") or {}).get("usage") or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if completion is None and prompt is not None and usage.get("total_tokens") is not None:
        completion = usage["total_tokens"] - prompt
    if prompt is None and completion is None and "tokens_used" in usage:
        return None, usage["tokens_used"]
    return prompt, completion


def parse_response(payload: dict, request_id: str | None = None) -> ApiAnswer:
    """A non-streamed response (chat, text completion, or images+prompt), any provider."""
    choices = payload.get("choices") or []
    if not choices:
        raise ValueError(f"response has no choices: {json.dumps(payload)[:300]}")
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content") if message else choice.get("text")
    if isinstance(text, list):  # content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    answer, think = split_thinking(text or "")
    prompt, completion = _usage(payload)
    return ApiAnswer(
        text=answer,
        reasoning=(reasoning or think) or None,
        finish_reason=choice.get("finish_reason"),
        input_tokens=prompt,
        output_tokens=completion,
        served_model=payload.get("model"),
        request_id=payload.get("id") or request_id,
    )


class StreamAccumulator:
    """Folds server-sent-event chunks (`data: {...}` lines, `data: [DONE]`) into one answer."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict = {}
        self.model: str | None = None
        self.id: str | None = None
        self.done = False

    def feed_line(self, line: str) -> None:
        line = line.strip()
        if not line.startswith("data:"):
            return
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        chunk = json.loads(data)
        if "error" in chunk:
            raise StreamError(chunk["error"])
        self.model = chunk.get("model") or self.model
        self.id = chunk.get("id") or self.id
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = delta.get("content") if delta else choice.get("text")
            if piece:
                self.text.append(piece)
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if thought:
                self.reasoning.append(thought)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def answer(self, request_id: str | None = None) -> ApiAnswer:
        answer, think = split_thinking("".join(self.text))
        prompt, completion = _usage({"usage": self.usage})
        return ApiAnswer(
            text=answer,
            reasoning="".join(self.reasoning) or think,
            finish_reason=self.finish_reason,
            input_tokens=prompt,
            output_tokens=completion,
            served_model=self.model,
            request_id=self.id or request_id,
        )


class StreamError(ValueError):
    def __init__(self, error) -> None:
        message = error.get("message") if isinstance(error, dict) else str(error)
        super().__init__(message or "error in stream")


def http_error_message(status: int, body: bytes | str) -> str:
    """The provider's own error message, from `{"error": {...}}` or the raw body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        payload = json.loads(text)
    except ValueError:
        return f"HTTP {status}: {text.strip()[:500] or '(empty body)'}"
    if isinstance(payload, dict) and "error" not in payload and "detail" in payload:
        payload = {"error": payload["detail"]}  # FastAPI servers (e.g. transformers serve)
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        parts = [str(error.get(k)) for k in ("type", "code") if error.get(k)]
        message = error.get("message") or json.dumps(error)[:500]
        return f"HTTP {status}: {message}" + (f" ({', '.join(parts)})" if parts else "")
    return f"HTTP {status}: {str(error)[:500]}"


def preflight_request(cfg: ApiConfig) -> dict:
    """A one-token text request used before a run to check the key and the endpoint."""
    return build_body(
        cfg, VLRequest(images=(), prompt="Reply with OK.", max_new_tokens=1), stream=False
    )
