"""End to end against a real OpenAI-compatible server: `transformers serve` on the tiny
random Qwen3-VL checkpoint, on 127.0.0.1 only, driven by the `--backend openai` flags.

What this server (transformers 5.23) answers, checked by hand and pinned below:
- The request's `model` must be exactly the string the server was started with (no
  normalisation: a trailing slash or an `@main` suffix gets HTTP 400 "Server is pinned to
  ...") — so `--api-model` is `str(tiny_model)`. The response's `model` is the server's own
  name for it (5.23 appends `@main`, 5.24 does not): vlbeam promises only that `served_model`
  holds whatever the server reported, and that is what the tests assert.
- `usage` (prompt/completion/total tokens) comes with every answer; image tokens count as
  prompt tokens. Streaming works with image data URIs: `stream_options` is ignored (logged as
  an unsupported field) but the last chunk carries `finish_reason` and `usage` anyway, and
  the stream ends without a `data: [DONE]` line.
- Whether the server strips whitespace from an answer is its own business: the tests compare
  the page text with what the same server answers directly to the same request.
- `GET /v1/models` lists only hub-cache models (an empty list here), so readiness is polled
  on `GET /health`; the pinned model is loaded before the server starts listening.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require_module
from tests.pipeline_helpers import SAMPLES_GLOB, read_table, run_job

require_module("fastapi", "dev")
require_module("uvicorn", "dev")
require_module("aiohttp", "openai")

STARTUP_TIMEOUT_S = 120.0
MAX_NEW_TOKENS = 8

# Never through a proxy: everything here talks to 127.0.0.1 only.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Server:
    def __init__(self, model: str, port: int, proc: subprocess.Popen, log: Path) -> None:
        self.model, self.port, self.proc, self.log = model, port, proc, log
        self.base_url = f"http://127.0.0.1:{port}/v1"

    @functools.cached_property
    def reported_model(self) -> str:
        """The name the server reports for its model in an answer's `model` field."""
        status, raw = self.post(
            {"model": self.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        )
        assert status == 200, raw
        return json.loads(raw)["model"]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def post(self, body: dict) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with _LOCAL.open(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(
                f"transformers serve exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        try:
            with _LOCAL.open(f"http://127.0.0.1:{server.port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    pytest.fail(f"transformers serve not up after {STARTUP_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's whole process group (uvicorn and anything it started)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(sharp_model, tmp_path_factory):
    """`transformers serve <sharp tiny model> --device cpu` on a free local port, once per
    module. The tiny checkpoint's own weights answer newlines to everything, so a page text
    could equal the server's answer to another request; the sharp copy (tests/sharp_model.py)
    answers each image and prompt differently."""
    work = tmp_path_factory.mktemp("transformers-serve")
    sharp = sharp_model
    hub_cache = work / "hf-hub-cache"  # must exist; the server scans it for models
    hub_cache.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
    }
    model, port, log = str(sharp), _free_port(), work / "server.log"
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model,
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole below
        )
    srv = Server(model, port, proc, log)
    try:
        _wait_until_ready(srv)
        yield srv
    finally:
        _stop(proc)


def _sse_text(raw: bytes) -> str:
    """The answer text of a server-sent-event stream: the `delta.content` pieces joined."""
    pieces = []
    for line in raw.decode().splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            for choice in json.loads(line[5:])["choices"]:
                pieces.append((choice.get("delta") or {}).get("content") or "")
    return "".join(pieces)


def direct_answer(server: Server, pdf: Path, stream: bool) -> tuple[tuple[int, int], str]:
    """Page 1 of `pdf` rendered as the pipeline renders it (default RenderConfig), sent by
    hand as one chat request with the OCR prompt: (page size, the server's answer text)."""
    from vlbeam.pipeline.prompts import DEFAULT_OCR_PROMPT_ID, builtin_prompt
    from vlbeam.schemas.config import RenderConfig
    from vlbeam.transforms.media.pdf_render import open_pdf, render_pdf_page

    doc = open_pdf(pdf.read_bytes())
    try:
        page = render_pdf_page(doc, 1, RenderConfig())
    finally:
        doc.close()
    assert page.image.startswith(b"\x89PNG")
    url = "data:image/png;base64," + base64.b64encode(page.image).decode("ascii")
    content = [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": builtin_prompt(DEFAULT_OCR_PROMPT_ID).text},
    ]
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_NEW_TOKENS,
        "temperature": 0.0,
        **({"stream": True} if stream else {}),
    }
    status, raw = server.post(body)
    assert status == 200, raw
    text = _sse_text(raw) if stream else json.loads(raw)["choices"][0]["message"]["content"]
    return (page.width_px, page.height_px), text


def _run(server: Server, out: Path, *extra: str):
    return run_job(
        [SAMPLES_GLOB],
        out,
        "--backend=openai",
        "--provider=openai",
        f"--base-url={server.base_url}",
        f"--api-model={server.model}",
        "--api-key-env=",
        f"--max-new-tokens={MAX_NEW_TOKENS}",
        "--run-id=serve",
        *extra,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_server_speaks_what_vlbeam_reads(server):
    """The raw wire format the API backend relies on (see the module docstring)."""
    status, raw = server.post(
        {"model": server.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    )
    assert status == 200, raw
    answer = json.loads(raw)
    # its own name for the pinned model: the path, with `@main` appended by 5.23
    assert answer["model"].removesuffix("@main") == server.model
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 1 and answer["usage"]["prompt_tokens"] > 0

    status, raw = server.post(
        {"model": f"{server.model}/", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert status == 400 and b"Server is pinned to" in raw


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_ocr_job_through_transformers_serve(server, tmp_path, stream):
    out = tmp_path / "out"
    _run(server, out, *(["--stream"] if stream else []))

    assert read_table(out, "failures") == []
    docs = read_table(out, "documents")
    assert sorted(Path(d["source_uri"]).name for d in docs) == [
        "born_digital.pdf",
        "scanned_page.pdf",
    ]
    assert {d["status"] for d in docs} == {"ok"} and {d["num_pages"] for d in docs} == {1}
    assert {(d["backend"], d["model"]) for d in docs} == {("openai", server.model)}

    pages = read_table(out, "pages")
    assert len(pages) == 2  # one row per page (each sample PDF has one)
    for page in pages:
        assert page["backend"] == "openai" and page["provider"] == "openai"
        assert page["model"] == server.model and page["run_id"] == "serve"
        assert page["served_model"] == server.reported_model  # whatever the server reported
        # The server reports usage (in the last SSE chunk when streaming, although it
        # ignores stream_options); the page image's visual tokens count as prompt tokens.
        assert page["input_tokens"] > 100
        # Random weights never emit EOS: every answer stops at the token limit.
        assert page["output_tokens"] == MAX_NEW_TOKENS and page["finish_reason"] == "length"
        assert page["request_id"] and page["latency_s"] > 0
        assert page["cost_usd"] is None and page["reasoning"] is None
        # The text is exactly what the server answers to the same page and prompt, asked
        # directly (greedy, so the same tokens), whatever the server does with whitespace.
        pdf = Path(SAMPLES_GLOB).parent / Path(page["source_uri"]).name
        size, text = direct_answer(server, pdf, stream)
        assert (page["width_px"], page["height_px"]) == size
        assert page["text"] == text
    # the comparison can fail: the two pages get different answers
    assert pages[0]["text"] != pages[1]["text"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wrong_model_name_stops_before_the_run(server, tmp_path):
    """The preflight request carries the server's own 400 message to the user."""
    from vlbeam.transforms.backends.openai_engine import PreflightFailed

    with pytest.raises(PreflightFailed, match="Server is pinned to"):
        run_job(
            [SAMPLES_GLOB],
            tmp_path / "out",
            "--backend=openai",
            f"--base-url={server.base_url}",
            "--api-model=not-the-served-model",
            "--api-key-env=",
        )
