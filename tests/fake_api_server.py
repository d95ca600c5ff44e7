"""A local OpenAI-compatible HTTP server for tests (127.0.0.1 only, a free port, a background
thread running aiohttp.web).

It speaks the three request styles of `vlbeam.transforms.backends.openai_protocol`:
- `POST /v1/chat/completions`: chat (JSON, or server-sent events when `body.stream` is true:
  `data: {...}` chunks with `choices[].delta.content`, a final chunk with `usage`, then
  `data: [DONE]`);
- `POST /v1/completions`: raw completions whose `prompt` holds one
  `<|vision_start|><|image_pad|><|vision_end|>` per entry of `images` (a mismatch is a 400),
  streamed as `text_completion` chunks ending with `data: [DONE]`;
- `POST /v1/vl/generate`: the images + prompt form (use it with `--api-style images_prompt
  --base-url http://127.0.0.1:P/v1/vl/generate`).

Every request is recorded (path, headers, JSON body, arrival time). Answers come from a
pluggable function of the recorded request (default: a text saying how many images it got),
and may carry reasoning (a `reasoning_content`/`reasoning` field, or `<think>…</think>` in the
text), `usage`, `id`, `model`, AIML-style `meta.usage.tokens_used` and response headers.

Faults are programmed per test: `script(...)` gives the next matching requests one behaviour
each, in order; `always(...)` gives every matching request the same one. Behaviours:
`rate_limited` (429 + Retry-After), `server_error` (500/503), `slow` (answers late),
`malformed` (broken JSON), `drop` (closes the connection without a response),
`unauthorized` (401 with an `{"error": {...}}` body), `status` (any code, e.g. 400/404/422),
`cut_stream` (an event stream that ends before `[DONE]`).

    with FakeApiServer() as server:
        server.script(rate_limited(1), server_error(503))
        ...  # point the client at server.base_url
        assert len(server.requests) == 3
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

VISION_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
IMAGES_PROMPT_PATH = "/v1/vl/generate"
_STAMP = re.compile(r"^\s*<(\d+(?:\.\d+)?) seconds>\s*$")
_DATA_URI = re.compile(r"^data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)$", re.DOTALL)


# -- what the server saw ---------------------------------------------------------------------


@dataclass
class Recorded:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body (None if it was not JSON)
    raw: bytes
    received_at: float  # time.monotonic()
    finished_at: float | None = None
    behaviour: str = "answer"

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def style(self) -> str:
        return {CHAT_PATH: "chat", COMPLETIONS_PATH: "completions"}.get(self.path, "images_prompt")

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def max_tokens(self) -> int | None:
        if not isinstance(self.body, dict):
            return None
        return self.body.get("max_tokens", self.body.get("max_completion_tokens"))

    @property
    def content_parts(self) -> list[dict]:
        """The user message's content parts (chat style), in order."""
        if not isinstance(self.body, dict):
            return []
        parts: list[dict] = []
        for message in self.body.get("messages") or []:
            content = message.get("content")
            if isinstance(content, str):
                parts.append({"type": "text", "text": content})
            elif isinstance(content, list):
                parts.extend(p for p in content if isinstance(p, dict))
        return parts

    @property
    def image_urls(self) -> list[str]:
        """Every image sent, as URLs / data URIs, in order (video parts expanded)."""
        if not isinstance(self.body, dict):
            return []
        if self.style != "chat":
            return list(self.body.get("images") or [])
        urls: list[str] = []
        for part in self.content_parts:
            if part.get("type") == "image_url":
                urls.append(part["image_url"]["url"])
            elif part.get("type") == "video":
                urls.extend(part["video"])
        return urls

    @property
    def images(self) -> list[bytes]:
        return [decode_data_uri(url)[1] for url in self.image_urls]

    @property
    def texts(self) -> list[str]:
        if self.style == "chat":
            return [p["text"] for p in self.content_parts if p.get("type") == "text"]
        prompt = self.body.get("prompt") if isinstance(self.body, dict) else None
        return [prompt] if isinstance(prompt, str) else []

    @property
    def timed_frames(self) -> list[tuple[float | None, bytes]]:
        """(time, image bytes) per image of a chat request, as a model sees them: for the
        interleaved form, the time read from the `<t seconds>` text just before the image
        (None if there is none); for a frame-list video part, frame i is at i / fps."""
        frames: list[tuple[float | None, bytes]] = []
        stamp: float | None = None
        for part in self.content_parts:
            if part.get("type") == "text":
                match = _STAMP.match(part.get("text", ""))
                stamp = float(match.group(1)) if match else None
            elif part.get("type") == "image_url":
                frames.append((stamp, decode_data_uri(part["image_url"]["url"])[1]))
                stamp = None
            elif part.get("type") == "video":
                fps = float(part["fps"])
                for i, url in enumerate(part["video"]):
                    frames.append((round(i / fps, 3), decode_data_uri(url)[1]))
        return frames

    @property
    def is_preflight(self) -> bool:
        """vlbeam's key check before a run: text only, one token."""
        return self.max_tokens == 1 and not self.image_urls


def decode_data_uri(url: str) -> tuple[str, bytes]:
    match = _DATA_URI.match(url)
    if not match:
        raise ValueError(f"not a base64 data URI: {url[:40]!r}")
    return match["mime"], base64.b64decode(match["data"], validate=True)


# -- what it answers ---------------------------------------------------------------------------


@dataclass
class Answer:
    """A successful answer. `reasoning_field` is "reasoning_content", "reasoning" or "think"
    (reasoning inside the text as `<think>…</think>`; always so for raw completions).
    `usage_style`: "openai" (usage{prompt,completion,total}_tokens), "aiml_meta"
    (meta.usage.tokens_used only) or "none". `id=""` leaves the id out of the body."""

    text: str
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"
    finish_reason: str = "stop"
    prompt_tokens: int = 1000
    completion_tokens: int = 20
    usage_style: str = "openai"
    id: str | None = None  # None: a fresh "fake-<n>"
    model: str | None = None  # None: the request's model + "@fake"
    headers: dict[str, str] = field(default_factory=dict)


AnswerFn = Callable[[Recorded], "Answer | str"]


def default_answer(request: Recorded) -> Answer:
    return Answer(text=f"I got {len(request.image_urls)} image(s).")


# -- faults --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    kind: str  # answer | status | slow | malformed | drop | cut_stream
    status: int = 200
    message: str = ""
    error_type: str | None = None
    error_code: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    raw_body: str | None = None  # sent as is instead of an {"error": {...}} body


ANSWER = Behaviour("answer")


def status(
    code: int,
    message: str = "error",
    *,
    error_type: str | None = None,
    error_code: str | None = None,
    headers: dict[str, str] | None = None,
    raw_body: str | None = None,
) -> Behaviour:
    return Behaviour(
        "status",
        status=code,
        message=message,
        error_type=error_type,
        error_code=error_code,
        headers=tuple((headers or {}).items()),
        raw_body=raw_body,
    )


def rate_limited(retry_after: float | str = 1, message: str = "Rate limit reached") -> Behaviour:
    value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
    return status(429, message, error_type="rate_limit_error", headers={"Retry-After": value})


def server_error(code: int = 500, message: str = "The server had an error") -> Behaviour:
    return status(code, message, error_type="server_error")


def unauthorized(message: str = "Incorrect API key provided") -> Behaviour:
    return status(401, message, error_type="invalid_request_error", error_code="invalid_api_key")


def slow(delay_s: float) -> Behaviour:
    """Answers normally, but only after `delay_s` (e.g. past the client's timeout)."""
    return Behaviour("slow", delay_s=delay_s)


def malformed() -> Behaviour:
    """200 with a JSON content type and a body cut in the middle of the object."""
    return Behaviour("malformed")


def cut_stream() -> Behaviour:
    """A 200 event stream that stops after one chunk: no finish_reason, no `[DONE]`."""
    return Behaviour("cut_stream")


def drop() -> Behaviour:
    """Closes the connection without sending any response."""
    return Behaviour("drop")


@dataclass
class _Rule:
    behaviour: Behaviour
    path: str | None
    match: Callable[[Recorded], bool] | None
    uses_left: int | None  # None: every matching request

    def applies(self, rec: Recorded) -> bool:
        if self.uses_left is not None and self.uses_left <= 0:
            return False
        if self.path is not None and rec.path != self.path:
            return False
        return self.match is None or bool(self.match(rec))


# -- the server -----------------------------------------------------------------------------------


class FakeApiServer:
    """See the module docstring. Start/stop with `with`, or `start()` / `stop()`."""

    def __init__(self, answer: AnswerFn | None = None) -> None:
        self.answer: AnswerFn = answer or default_answer
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.port: int | None = None
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._ids = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # -- programming it --

    def script(
        self,
        *behaviours: Behaviour,
        path: str | None = None,
        match: Callable[[Recorded], bool] | None = None,
    ) -> None:
        """The next matching requests get these behaviours, one each, in order (after
        that, the answer function again). Rules are tried in the order they were added."""
        with self._lock:
            self._rules.extend(_Rule(b, path, match, 1) for b in behaviours)

    def always(
        self,
        behaviour: Behaviour,
        *,
        path: str | None = None,
        match: Callable[[Recorded], bool] | None = None,
    ) -> None:
        """Every matching request gets this behaviour (until `reset()`)."""
        with self._lock:
            self._rules.append(_Rule(behaviour, path, match, None))

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self.requests.clear()
            self.max_in_flight = 0

    # -- reading what happened --

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def model_requests(self) -> list[Recorded]:
        """Every request but the preflight checks."""
        with self._lock:
            return [r for r in self.requests if not r.is_preflight]

    # -- lifecycle --

    def start(self) -> FakeApiServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-api-server", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, shutdown_timeout=1.0).start()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shutdown():
            self._stopping.set()  # wakes slow handlers
            await self._runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
        self._thread = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- handling --

    def _pick(self, rec: Recorded) -> Behaviour:
        with self._lock:
            for rule in self._rules:
                if rule.applies(rec):
                    if rule.uses_left is not None:
                        rule.uses_left -= 1
                    return rule.behaviour
        return ANSWER

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = Recorded(
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            raw=raw,
            received_at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            behaviour = self._pick(rec)
            rec.behaviour = behaviour.kind
            return await self._respond(request, rec, behaviour)
        finally:
            with self._lock:
                self.in_flight -= 1
            rec.finished_at = time.monotonic()

    async def _respond(
        self, request: web.Request, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        if behaviour.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            # Nothing can be sent any more; aiohttp drops whatever the handler returns.
            raise asyncio.CancelledError
        if behaviour.kind == "status":
            if behaviour.raw_body is not None:
                return web.Response(
                    status=behaviour.status,
                    text=behaviour.raw_body,
                    headers=dict(behaviour.headers),
                    content_type="text/plain",
                )
            return error_response(
                behaviour.status,
                behaviour.message,
                behaviour.error_type,
                behaviour.error_code,
                dict(behaviour.headers),
            )
        if behaviour.kind == "malformed":
            return web.Response(
                status=200, text='{"id": "cut", "choices": [{"message": {"content": "hal'
            )
        if behaviour.kind == "cut_stream":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            chunk = {"id": "cut", "choices": [{"index": 0, "delta": {"content": "half an"}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write_eof()
            return response
        if behaviour.kind == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), behaviour.delay_s)
        return await self._answer(request, rec)

    async def _answer(self, request: web.Request, rec: Recorded) -> web.StreamResponse:
        body = rec.body
        if request.method != "POST":
            return error_response(405, "use POST", "invalid_request_error")
        if rec.path not in (CHAT_PATH, COMPLETIONS_PATH, IMAGES_PROMPT_PATH):
            return error_response(404, f"no endpoint at {rec.path}", "not_found_error")
        if not isinstance(body, dict) or not body.get("model"):
            return error_response(400, "body must be a JSON object with a model")
        if rec.path == CHAT_PATH and not isinstance(body.get("messages"), list):
            return error_response(400, "messages is required", param="messages")
        well_formed = isinstance(body.get("prompt"), str) and isinstance(body.get("images"), list)
        if rec.path in (COMPLETIONS_PATH, IMAGES_PROMPT_PATH) and not well_formed:
            return error_response(422, "prompt (string) and images (array) are required")
        if rec.path == COMPLETIONS_PATH:
            placeholders = body["prompt"].count(VISION_PLACEHOLDER)
            if placeholders != len(body["images"]):
                return error_response(
                    400,
                    f"prompt has {placeholders} image placeholders but {len(body['images'])} "
                    "images were given",
                    param="images",
                )
        try:
            for url in rec.image_urls:
                if url.startswith("data:"):
                    decode_data_uri(url)
        except (ValueError, binascii.Error) as exc:
            return error_response(400, f"bad image: {exc}", param="images")
        answer = self.answer(rec)
        if isinstance(answer, str):
            answer = Answer(text=answer)
        with self._lock:
            self._ids += 1
            serial = self._ids
        answer_id = f"fake-{serial}" if answer.id is None else answer.id
        model = answer.model or f"{body['model']}@fake"
        if rec.stream:
            return await self._stream(request, rec, answer, answer_id, model)
        return web.json_response(
            self._payload(rec, answer, answer_id, model), headers=answer.headers
        )

    def _text(self, rec: Recorded, answer: Answer) -> str:
        if answer.reasoning and (answer.reasoning_field == "think" or rec.style == "completions"):
            return f"<think>{answer.reasoning}</think>\n{answer.text}"
        return answer.text

    def _usage(self, rec: Recorded, answer: Answer) -> dict:
        if answer.usage_style == "none":
            return {}
        if answer.usage_style == "aiml_meta":
            total = answer.prompt_tokens + answer.completion_tokens
            return {"meta": {"usage": {"tokens_used": total}}}
        usage = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
        if rec.style == "images_prompt":
            usage["prompt_tokens_details"] = {"image_tokens": 10 * len(rec.image_urls)}
            usage["completion_tokens_details"] = {"reasoning_tokens": 0}
        return {"usage": usage}

    def _payload(self, rec: Recorded, answer: Answer, answer_id: str, model: str) -> dict:
        text = self._text(rec, answer)
        if rec.style == "completions":
            choice = {"index": 0, "text": text, "finish_reason": answer.finish_reason}
            kind = "text_completion"
        else:
            message: dict = {"role": "assistant", "content": text}
            if answer.reasoning and answer.reasoning_field != "think":
                message[answer.reasoning_field] = answer.reasoning
            choice = {"index": 0, "message": message, "finish_reason": answer.finish_reason}
            kind = "chat.completion"
        payload: dict = {"object": kind, "created": 0, "model": model, "choices": [choice]}
        if answer_id:
            payload["id"] = answer_id
        payload.update(self._usage(rec, answer))
        return payload

    async def _stream(
        self, request: web.Request, rec: Recorded, answer: Answer, answer_id: str, model: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                     **answer.headers}
        )  # fmt: skip
        await response.prepare(request)
        head: dict = {"model": model, "created": 0}
        if answer_id:
            head["id"] = answer_id
        text = self._text(rec, answer)
        pieces = [text[i : i + 7] for i in range(0, len(text), 7)] or [""]

        async def send(chunk: dict) -> None:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        if rec.style == "completions":
            for piece in pieces:
                choice = {"index": 0, "text": piece, "finish_reason": None}
                await send({**head, "object": "text_completion", "choices": [choice]})
            final = {"index": 0, "text": "", "finish_reason": answer.finish_reason}
            await send(
                {**head, "object": "text_completion", "choices": [final],
                 **self._usage(rec, answer)}
            )  # fmt: skip
        else:
            kind = "chat.completion.chunk"
            delta = {"role": "assistant", "content": ""}
            await send({**head, "object": kind, "choices": [{"index": 0, "delta": delta}]})
            if answer.reasoning and answer.reasoning_field != "think":
                for piece in (answer.reasoning[:5], answer.reasoning[5:]):
                    delta = {answer.reasoning_field: piece}
                    await send({**head, "object": kind, "choices": [{"index": 0, "delta": delta}]})
            for piece in pieces:
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                await send({**head, "object": kind, "choices": [choice]})
            final = {"index": 0, "delta": {}, "finish_reason": answer.finish_reason}
            await send({**head, "object": kind, "choices": [final]})
            await send({**head, "object": kind, "choices": [], **self._usage(rec, answer)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def error_response(
    code: int,
    message: str,
    error_type: str | None = "invalid_request_error",
    error_code: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
) -> web.Response:
    error = {"message": message, "type": error_type, "param": param, "code": error_code}
    return web.json_response({"error": error}, status=code, headers=headers)
