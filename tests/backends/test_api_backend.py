# ruff: noqa: E402  (the test dependency check runs before the imports that need it)
"""`--backend openai` against a local fake API server (tests/fake_api_server.py, 127.0.0.1
only): the exact requests each preset and style sends, the rows that come out, video over
HTTP, retries and faults, the early stop on a rejected key, concurrency and rate limits, and
that the API key never shows up anywhere."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import math
import pickle
import time
import traceback
from email.utils import formatdate

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import require_module

require_module("aiohttp", "openai")

from tests.fake_api_server import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    IMAGES_PROMPT_PATH,
    VISION_PLACEHOLDER,
    Answer,
    FakeApiServer,
    Recorded,
    cut_stream,
    decode_data_uri,
    drop,
    malformed,
    rate_limited,
    server_error,
    slow,
    status,
    unauthorized,
)
from tests.pipeline_helpers import SAMPLES_GLOB, fake_handler, inked_page, read_table, run_job
from tests.video_fixtures import constant_rate, is_red, write_video
from vlbeam.pipeline.prompts import builtin_prompt
from vlbeam.schemas.elements import VLRequest, VLResult
from vlbeam.transforms.backends import openai_engine
from vlbeam.transforms.backends.openai_engine import (
    ApiEngine,
    MissingApiKey,
    PreflightFailed,
    RunAborted,
    _RateLimiter,
    preflight,
)
from vlbeam.transforms.backends.openai_protocol import QWEN_STOP, ApiConfig

KEY = "sk-vlbeam-TEST-5f3a9c1e7d-never-leak-me"
KEY_ENV = "VLBEAM_TEST_API_KEY"
OCR_PROMPT = builtin_prompt("ocr_markdown_v1").text
PRICES = ("--price-input-per-mtok=2", "--price-output-per-mtok=6")


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


@pytest.fixture
def engines():
    """Makes ApiEngines and closes them at the end of the test."""
    made: list[ApiEngine] = []

    def make(cfg: ApiConfig) -> ApiEngine:
        made.append(ApiEngine(cfg, seed=0))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


def api_args(server: FakeApiServer, provider: str, *extra: str) -> list[str]:
    return ["--backend=openai", f"--provider={provider}", f"--base-url={server.base_url}", *extra]


def image_size(url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(decode_data_uri(url)[1])).size


def page_answer(**kw):
    """An answer naming the size of each image received (so a row shows its page arrived)."""

    def answer(rec: Recorded) -> Answer:
        if rec.is_preflight:
            return Answer(text="OK", completion_tokens=1)
        sizes = " ".join("{}x{}".format(*image_size(url)) for url in rec.image_urls)
        return Answer(text=f"# Page\n\n{len(rec.image_urls)} image(s): {sizes}", **kw)

    return answer


def expected_text(row: dict) -> str:
    return f"# Page\n\n1 image(s): {row['width_px']}x{row['height_px']}"


# -- every preset, through the whole pipeline -----------------------------------------------------

PRESET_CASES = {
    "openai": dict(
        flags=["--api-model=served-qwen", "--seed=3", "--temperature=0.2",
               '--extra-body={"top_k": 20}'],
        key_env="OPENAI_API_KEY",
        model="served-qwen",
        body={"max_tokens": 2048, "temperature": 0.2, "seed": 3, "top_k": 20},
        answer={},
        reasoning=None,
    ),
    "dashscope": dict(
        flags=['--extra-body={"vl_high_resolution_images": true, "enable_thinking": true}'],
        key_env="DASHSCOPE_API_KEY",
        model="qwen3-vl-flash",
        body={"max_tokens": 2048, "temperature": 0.0, "vl_high_resolution_images": True,
              "enable_thinking": True},
        answer={"reasoning": "Looking at the page first.", "reasoning_field": "reasoning_content"},
        reasoning="Looking at the page first.",
    ),
    "openrouter": dict(
        flags=["--api-header=HTTP-Referer=https://example.org/vlbeam",
               "--api-header=X-Title=vlbeam tests", "--provider-order=alibaba,novita",
               "--reasoning-effort=high", "--seed=11", "--api-model=qwen/other-vl"],
        key_env="OPENROUTER_API_KEY",
        model="qwen/other-vl",
        body={"max_tokens": 2048, "temperature": 0.0, "seed": 11,
              "provider": {"order": ["alibaba", "novita"]}, "reasoning": {"effort": "high"}},
        headers={"http-referer": "https://example.org/vlbeam", "x-title": "vlbeam tests"},
        answer={"reasoning": "The page is a scan.", "reasoning_field": "reasoning",
                "model": "qwen/qwen3-vl-235b-a22b-thinking-2025"},
        reasoning="The page is a scan.",
        served_model="qwen/qwen3-vl-235b-a22b-thinking-2025",
    ),
    "vercel": dict(
        flags=["--provider-order=alibaba,novita,deepinfra"],
        key_env="AI_GATEWAY_API_KEY",
        model="alibaba/qwen3-vl-instruct",
        body={"max_tokens": 2048, "temperature": 0.0,
              "providerOptions": {"gateway": {"order": ["alibaba", "novita", "deepinfra"]}}},
        answer={"reasoning": "hidden thoughts", "reasoning_field": "think", "id": "",
                "headers": {"x-request-id": "gw-req-77"}},
        reasoning="hidden thoughts",
        request_id="gw-req-77",
    ),
    "aimlapi": dict(
        flags=["--seed=7", "--max-new-tokens=512"],
        key_env="AIMLAPI_API_KEY",
        model="alibaba/qwen3-vl-32b-instruct",
        body={"max_completion_tokens": 512, "temperature": 0.0, "seed": 7},
        answer={"usage_style": "aiml_meta", "finish_reason": "length"},
        reasoning=None,
        tokens=(None, 1020),  # meta.usage.tokens_used only
        finish_reason="length",
    ),
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(PRESET_CASES))
def test_every_preset_sends_the_documented_request_and_fills_the_rows(
    provider, server, tmp_path, monkeypatch
):
    case = PRESET_CASES[provider]
    monkeypatch.setenv(case["key_env"], KEY)
    server.answer = page_answer(**case["answer"])
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, *api_args(server, provider, *case["flags"], *PRICES))

    model, body = case["model"], case["body"]
    max_field = "max_completion_tokens" if provider == "aimlapi" else "max_tokens"
    assert len(server.requests) == 3
    for rec in server.requests:
        assert rec.path == CHAT_PATH and rec.header("host") == f"127.0.0.1:{server.port}"
        assert rec.header("authorization") == f"Bearer {KEY}"
        assert rec.header("content-type").startswith("application/json")
        for name in ("http-referer", "x-title"):
            assert rec.header(name) == case.get("headers", {}).get(name)
    # first the one-token key check, text only
    check = server.requests[0]
    assert check.is_preflight
    assert check.body == {
        **body,
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Reply with OK."}]}],
        max_field: 1,
    }
    # then one request per page: the page as a PNG data URI, then the OCR prompt
    pages = server.requests[1:]
    sizes = set()
    for rec in pages:
        assert {k: v for k, v in rec.body.items() if k != "messages"} == {"model": model, **body}
        [message] = rec.body["messages"]
        image, text = message["content"]
        assert message["role"] == "user" and text == {"type": "text", "text": OCR_PROMPT}
        assert image["type"] == "image_url"
        assert image["image_url"]["url"].startswith("data:image/png;base64,")
        sizes.add(image_size(image["image_url"]["url"]))

    rows = read_table(out, "pages")
    assert read_table(out, "failures") == [] and len(rows) == 2
    assert {(r["width_px"], r["height_px"]) for r in rows} == sizes
    ids = {case.get("request_id")} if "request_id" in case else {"fake-2", "fake-3"}
    assert {r["request_id"] for r in rows} == ids
    tokens_in, tokens_out = case.get("tokens", (1000, 20))
    for row in rows:
        assert row["text"] == expected_text(row)  # reasoning never in the text
        assert row["reasoning"] == case["reasoning"]
        assert (row["provider"], row["backend"], row["model"]) == (provider, "openai", model)
        assert row["served_model"] == case.get("served_model", f"{model}@fake")
        assert (row["input_tokens"], row["output_tokens"]) == (tokens_in, tokens_out)
        assert row["finish_reason"] == case.get("finish_reason", "stop")
        assert row["cost_usd"] == pytest.approx(((tokens_in or 0) * 2 + tokens_out * 6) / 1e6)
        assert row["latency_s"] > 0
    docs = read_table(out, "documents")
    assert {(d["status"], d["backend"], d["model"]) for d in docs} == {("ok", "openai", model)}


# -- request styles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "stream"),
    [("chat", True), ("completions", False), ("completions", True), ("images_prompt", False)],
)
def test_request_styles_through_the_pipeline(style, stream, server, tmp_path):
    server.answer = page_answer(reasoning="thinking it over", prompt_tokens=1500,
                                completion_tokens=30)  # fmt: skip
    base = server.url(IMAGES_PROMPT_PATH) if style == "images_prompt" else server.base_url
    argv = [
        "--backend=openai", "--provider=openai", f"--base-url={base}", "--api-model=local-qwen",
        "--api-key-env=", f"--api-style={style}", "--max-new-tokens=256",
        *(["--stream"] if stream else []),
    ]  # fmt: skip
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, *argv)

    path = {"chat": CHAT_PATH, "completions": COMPLETIONS_PATH}.get(style, IMAGES_PROMPT_PATH)
    assert [r.path for r in server.requests] == [path] * 3
    assert all(r.header("authorization") is None for r in server.requests)  # no key, no header
    check, pages = server.requests[0], server.requests[1:]
    assert check.is_preflight and not check.stream  # the key check is never streamed
    for rec in pages:
        assert rec.body["model"] == "local-qwen" and rec.body["max_tokens"] == 256
        assert rec.stream == stream
        assert len(rec.image_urls) == 1 and rec.image_urls[0].startswith("data:image/png;")
    if style == "chat":
        assert all(r.body["stream_options"] == {"include_usage": True} for r in pages)
    if style == "completions":
        assert check.body["images"] == [] and VISION_PLACEHOLDER not in check.body["prompt"]
        for rec in pages:
            assert rec.body["prompt"].count(VISION_PLACEHOLDER) == 1
            assert rec.body["prompt"].startswith("<|im_start|>user\n")
            assert OCR_PROMPT in rec.body["prompt"] and rec.body["stop"] == list(QWEN_STOP)
    if style == "images_prompt":
        assert set(pages[0].body) == {"model", "images", "prompt", "max_tokens", "temperature"}
        assert all(r.body["prompt"] == OCR_PROMPT for r in pages)

    rows = read_table(out, "pages")
    assert read_table(out, "failures") == [] and len(rows) == 2
    for row in rows:
        assert row["text"] == expected_text(row)
        assert row["reasoning"] == "thinking it over"
        assert (row["input_tokens"], row["output_tokens"]) == (1500, 30)
        assert row["served_model"] == "local-qwen@fake" and row["finish_reason"] == "stop"
        assert row["request_id"] in {"fake-2", "fake-3"} and row["cost_usd"] is None


# -- video over HTTP ------------------------------------------------------------------------------


def clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"


class ReadingServerModel:
    """The server side of a model that reads the interleaved form: the `<t seconds>` text
    before each image and the image itself; answers the span of red frames (cookbook
    event format). Keeps each answer by the frame times it saw."""

    def __init__(self) -> None:
        self.answers: dict[tuple[float, ...], str] = {}

    def __call__(self, rec: Recorded) -> Answer:
        if rec.is_preflight:
            return Answer(text="OK")
        frames = rec.timed_frames
        stamps = tuple(t for t, _ in frames)
        assert frames and None not in stamps, "every frame must follow its <t seconds> text"
        step = stamps[1] - stamps[0]
        red = [t for t, image in frames if is_red(Image.open(io.BytesIO(image)))]
        text = json.dumps({f"{clock(red[0])} - {clock(red[-1] + step)}": "a red square"})
        self.answers[stamps] = text if red else "[]"
        return Answer(text=self.answers[stamps])


def test_video_grounding_over_http_matches_the_local_backend(server, tmp_path):
    video = write_video(tmp_path / "in" / "clip.mp4", constant_rate(20, 10), (10.0, 14.0))
    reader = ReadingServerModel()
    server.answer = reader
    flags = ["--tasks=grounding", "--query=red square", "--window-seconds=16",
             "--window-overlap-seconds=4", "--fps=2"]  # fmt: skip
    out = tmp_path / "http"
    run_job([str(video)], out, *flags, "--provider=openai", "--backend=openai",
            f"--base-url={server.base_url}", "--api-model=vl", "--api-key-env=")  # fmt: skip

    windows = sorted(read_table(out, "video_windows"), key=lambda w: w["window_index"])
    assert [(w["start_s"], round(w["end_s"])) for w in windows] == [(0, 16), (12, 20)]
    sent = {tuple(t for t, _ in r.timed_frames) for r in server.model_requests()}
    assert sent == {tuple(round(t, 1) for t in w["frame_times_s"]) for w in windows}
    assert sent == set(reader.answers)
    for rec in server.model_requests():
        assert rec.content_parts[-1]["type"] == "text" and "red square" in rec.texts[-1]
    [event] = read_table(out, "video_events")
    assert event["query"] == "red square" and event["window_indexes"] == [0, 1]
    assert event["start_s"] == pytest.approx(10.0, abs=0.5)
    assert event["end_s"] == pytest.approx(14.0, abs=0.5)
    assert read_table(out, "failures") == []
    assert {(w["backend"], w["provider"]) for w in windows} == {("openai", "openai")}

    # The same answers given to the local backend's path give the same tables.
    def same_answers(_model, batch, _cfg):
        return [
            VLResult(text=reader.answers[tuple(round(t, 1) for t in r.frame_times_s)],
                     input_tokens=1000, output_tokens=20, finish_reason="stop", latency_s=0.0)
            for r in batch
        ]  # fmt: skip

    local = tmp_path / "local"
    run_job([str(video)], local, *flags, handler=fake_handler(same_answers, model="vl"))
    keep = ("start_s", "end_s", "query", "description", "window_indexes", "doc_id", "model")
    assert [{k: e[k] for k in keep} for e in read_table(local, "video_events")] == [
        {k: event[k] for k in keep}
    ]
    local_windows = sorted(read_table(local, "video_windows"), key=lambda w: w["window_index"])
    keep = ("window_index", "start_s", "end_s", "frame_times_s", "raw_output", "num_frames")
    assert [{k: w[k] for k in keep} for w in local_windows] == [
        {k: w[k] for k in keep} for w in windows
    ]


def test_native_video_part_for_dashscope(server, tmp_path, monkeypatch):
    """--native-video: a window from 0 s with evenly spaced frames goes as DashScope's
    frame-list video part (times from fps); a later window keeps `<t seconds>` texts. The
    events come out at the same absolute times either way."""
    monkeypatch.setenv(KEY_ENV, KEY)
    video = write_video(tmp_path / "in" / "clip.mp4", constant_rate(20, 10), (10.0, 14.0))
    server.answer = ReadingServerModel()
    out = tmp_path / "out"
    run_job([str(video)], out, "--tasks=grounding", "--query=red square", "--fps=2",
            "--window-seconds=16", "--window-overlap-seconds=4", "--native-video",
            *api_args(server, "dashscope", f"--api-key-env={KEY_ENV}"))  # fmt: skip
    kinds = sorted(tuple(p["type"] for p in r.content_parts[:2]) for r in server.model_requests())
    assert kinds == [("text", "image_url"), ("video", "text")]
    [native] = [r for r in server.model_requests() if r.content_parts[0]["type"] == "video"]
    assert native.content_parts[0]["fps"] == pytest.approx(2.0)
    assert len(native.content_parts[0]["video"]) == 32
    [event] = read_table(out, "video_events")
    assert event["window_indexes"] == [0, 1]
    assert event["start_s"] == pytest.approx(10.0, abs=0.5)
    assert event["end_s"] == pytest.approx(14.0, abs=0.5)


# -- faults, driving the engine directly (small backoff) ------------------------------------------


def engine_cfg(server: FakeApiServer, **kw) -> ApiConfig:
    base = dict(provider="openai", base_url=server.base_url, model="m", api_key_env=None,
                backoff_base_s=0.01, backoff_max_s=10.0, max_attempts=4, timeout_s=5.0)  # fmt: skip
    return ApiConfig(**{**base, **kw})


def page_request(prompt: str = "Read.") -> VLRequest:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(buf, format="PNG")
    return VLRequest(images=(buf.getvalue(),), prompt=prompt)


@pytest.mark.parametrize(
    ("fault", "stream"),
    [
        (server_error(500), False),
        (server_error(503, "overloaded"), False),
        (server_error(502), True),
        (status(408, "request timeout"), False),
        (status(409, "conflict"), False),
        (malformed(), False),
        (drop(), False),
        (drop(), True),
        (cut_stream(), True),
        (slow(3.0), False),
    ],
    ids=["500", "503", "502-stream", "408", "409", "malformed", "drop", "drop-stream",
         "cut-stream", "slow"],
)  # fmt: skip
def test_transient_fault_then_success(fault, stream, server, engines):
    server.script(fault)
    engine = engines(engine_cfg(server, stream=stream, timeout_s=0.4))
    started = time.monotonic()
    [result] = engine.infer([page_request()])
    assert result.ok, result.error_message
    assert result.text == "I got 1 image(s)." and result.output_tokens == 20
    assert [r.behaviour for r in server.requests] == [fault.kind, "answer"]
    assert time.monotonic() - started < 2.5  # the slow answer was not waited for


def test_429_waits_for_retry_after(server, engines):
    server.script(rate_limited(1))
    engine = engines(engine_cfg(server))
    started = time.monotonic()
    [result] = engine.infer([page_request()])
    elapsed = time.monotonic() - started
    assert result.ok and result.text == "I got 1 image(s)."
    first, second = server.requests
    assert first.behaviour == "status" and second.behaviour == "answer"
    assert second.received_at - first.received_at >= 0.99
    assert 1.0 <= elapsed < 3.0


def test_429_waits_for_a_retry_after_http_date(server, engines):
    """Retry-After as an HTTP date (whole seconds, GMT): the retry is not sent before it."""
    wall_offset = time.time() - time.monotonic()
    not_before = math.ceil(time.time()) + 1  # 1-2 s from now
    server.script(rate_limited(formatdate(not_before, usegmt=True)))
    engine = engines(engine_cfg(server))  # backoff alone would wait 0.01 s
    [result] = engine.infer([page_request()])
    assert result.ok and result.text == "I got 1 image(s)."
    first, second = server.requests
    assert first.behaviour == "status" and second.behaviour == "answer"
    assert second.received_at + wall_offset >= not_before - 0.02  # 20 ms for clock rounding
    assert second.received_at - first.received_at < 5.0  # the date, not the 10 s backoff cap


def test_persistent_500_fails_after_exactly_max_attempts(server, engines):
    server.always(server_error(500, "model crashed while decoding"))
    engine = engines(engine_cfg(server, max_attempts=3))
    [result] = engine.infer([page_request()])
    assert not result.ok and result.error_type == "HTTP500"
    assert "model crashed while decoding" in result.error_message
    assert "3 attempts" in result.error_message
    assert len(server.requests) == 3


def test_persistent_timeouts_fail_as_connection_errors(server, engines):
    server.always(slow(3.0))
    engine = engines(engine_cfg(server, max_attempts=2, timeout_s=0.2))
    [result] = engine.infer([page_request()])
    assert result.error_type == "ApiConnectionError" and "timed out" in result.error_message
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("code", "message"),
    [(400, "image too large"), (401, "Incorrect API key provided"), (403, "forbidden region"),
     (404, "The model `m` does not exist"), (422, "prompt is required")],
)  # fmt: skip
def test_client_errors_fail_at_once(code, message, server, engines):
    server.always(status(code, message), path=CHAT_PATH)  # a per-path rule
    engine = engines(engine_cfg(server, max_attempts=5))
    [result] = engine.infer([page_request()])
    assert result.error_type == f"HTTP{code}" and message in result.error_message
    assert len(server.requests) == 1  # no retry


def test_a_batch_fails_element_by_element(server, engines):
    server.script(status(400, "this one is bad"), match=lambda r: "bad" in r.texts[-1])
    engine = engines(engine_cfg(server))
    results = engine.infer([page_request("good 1"), page_request("bad"), page_request("good 2")])
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error_type == "HTTP400" and "this one is bad" in results[1].error_message


@pytest.mark.parametrize(
    "rejected",
    [unauthorized(), status(403, "key not allowed here", error_type="permission_error")],
    ids=["401", "403"],
)
def test_auth_failures_abort_after_that_many_in_a_row(rejected, server, engines):
    code = f"HTTP{rejected.status}"
    server.always(rejected)
    engine = engines(engine_cfg(server, auth_failures_to_abort=3))
    results = engine.infer([page_request(), page_request()])  # 2 < 3: keep going
    assert [r.error_type for r in results] == [code, code]
    with pytest.raises(RunAborted, match="rejected every request"):
        engine.infer([page_request()])
    # once stopping, nothing more is sent
    sent = len(server.requests)
    assert not engine.submit(page_request()).result().ok
    assert len(server.requests) == sent
    # a success breaks the row: rejections count again from zero after it
    server.reset()
    server.script(rejected, rejected)
    ok = engines(engine_cfg(server, auth_failures_to_abort=3))
    assert [r.error_type for r in ok.infer([page_request()] * 2)] == [code] * 2
    assert ok.infer([page_request()])[0].ok
    server.always(rejected)
    assert [r.error_type for r in ok.infer([page_request()] * 2)] == [code] * 2
    with pytest.raises(RunAborted):  # a key revoked mid-run stops the run too
        ok.infer([page_request()])


@pytest.mark.parametrize("transport", ["timeout", "drop", "500"])
def test_a_transport_error_is_not_a_success(transport, server, engines):
    """A timeout, a dropped connection or a 5xx before the rejections doesn't hide them: the
    abort fires after `auth_failures_to_abort` 401s whatever failed before."""
    first = {"timeout": slow(5), "drop": drop(), "500": server_error(503)}[transport]
    server.script(first)
    server.always(unauthorized())
    engine = engines(engine_cfg(server, auth_failures_to_abort=3, max_attempts=1, timeout_s=1))
    [failed] = engine.infer([page_request()])
    assert not failed.ok and failed.error_type in ("ApiConnectionError", "HTTP503")
    assert [r.error_type for r in engine.infer([page_request()] * 2)] == ["HTTP401"] * 2
    with pytest.raises(RunAborted, match="3 authentication failures in a row"):
        engine.infer([page_request()])


@pytest.mark.parametrize("code", [400, 404, 422])
def test_client_errors_never_abort_the_run(code, server, engines):
    """A bad request or an unknown model fails each element, however many there are and
    with no success at all: only 401/403 say the key is wrong."""
    server.always(status(code, "not this one"))
    engine = engines(engine_cfg(server, auth_failures_to_abort=3))
    for _ in range(3):  # 9 rejections, 3x the abort threshold
        results = engine.infer([page_request()] * 3)
        assert [r.error_type for r in results] == [f"HTTP{code}"] * 3
    engine.check()  # what the inference stage calls between batches: no RunAborted
    assert len(server.requests) == 9


def test_preflight_stops_on_a_rejected_key_and_warns_on_a_transient_error(server, caplog):
    server.always(unauthorized("Invalid token"))
    with pytest.raises(PreflightFailed, match="HTTP 401: Invalid token"):
        preflight(engine_cfg(server))
    assert len(server.requests) == 1
    server.reset()
    server.always(server_error(503, "warming up"))
    with caplog.at_level(logging.WARNING):
        preflight(engine_cfg(server, max_attempts=6))  # returns: the run's retries will cope
    assert len(server.requests) == 2  # the check tries at most twice
    assert "warming up" in caplog.text


# -- faults through the pipeline ------------------------------------------------------------------


def test_persistent_500_gives_failure_rows_after_max_attempts(server, tmp_path):
    server.always(server_error(500, "GPU fell off the bus"), match=lambda r: not r.is_preflight)
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, "--backend=openai", "--provider=openai", "--api-model=m",
            f"--base-url={server.base_url}", "--api-key-env=", "--max-attempts=2")  # fmt: skip
    failures = read_table(out, "failures")
    assert read_table(out, "pages") == [] and len(failures) == 2
    for failure in failures:
        assert (failure["stage"], failure["error_type"], failure["unit"]) == (
            "inference", "HTTP500", 1
        )  # fmt: skip
        assert "GPU fell off the bus" in failure["message"]
    assert len(server.model_requests()) == 4  # exactly --max-attempts per page
    assert {d["status"] for d in read_table(out, "documents")} == {"failed"}


def cli_run(*argv: str) -> int:
    from vlbeam.pipeline.cli import main

    return main(["run", *argv])


@pytest.mark.parametrize(
    ("fault", "shown"),
    [(unauthorized("Incorrect API key provided: sk-...abcd"), "HTTP 401: Incorrect API key"),
     (status(404, "The model `nope` does not exist"), "HTTP 404: The model `nope` does not")],
)  # fmt: skip
def test_preflight_failure_stops_the_cli_with_the_providers_message(
    fault, shown, server, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.always(fault)
    out = tmp_path / "out"
    code = cli_run(f"--input={SAMPLES_GLOB}", f"--output={out}",
                   *api_args(server, "vercel", f"--api-key-env={KEY_ENV}"))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("vlbeam: the API check before the run failed")
    assert shown in err
    assert len(server.requests) == 1 and not out.exists()


def test_every_request_rejected_stops_the_run_early(server, tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.always(unauthorized(f"Incorrect API key provided: {KEY}"))
    pdf = tmp_path / "in" / "thirty.pdf"
    pdf.parent.mkdir()
    pages = [inked_page((60, 80)) for _ in range(30)]
    pages[0].save(pdf, save_all=True, append_images=pages[1:])
    with pytest.raises(RunAborted) as info:
        run_job([str(pdf)], tmp_path / "out",
                *api_args(server, "vercel", f"--api-key-env={KEY_ENV}", "--no-preflight",
                          "--max-concurrency=2", "--target-long-side=128"))  # fmt: skip
    message = str(info.value)
    assert "rejected every request" in message and f"${KEY_ENV}" in message
    # auth_failures_to_abort, plus at most the engine's capacity (2 x --max-concurrency)
    # already submitted when the eighth rejection is read: not 30
    assert 8 <= len(server.requests) <= 8 + 4
    assert KEY not in message + "".join(traceback.format_exception(info.value))
    assert KEY not in caplog.text + "".join(capfd.readouterr())


def test_missing_key_variable_is_named_at_launch(server, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(KEY_ENV, raising=False)
    code = cli_run(f"--input={SAMPLES_GLOB}", f"--output={tmp_path / 'a'}",
                   *api_args(server, "aimlapi", f"--api-key-env={KEY_ENV}"))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and KEY_ENV in err and "not set" in err
    # without the key check the worker's engine refuses to start, with the same message
    with pytest.raises(MissingApiKey, match=KEY_ENV):
        run_job(
            [SAMPLES_GLOB],
            tmp_path / "b",
            *api_args(server, "aimlapi", f"--api-key-env={KEY_ENV}", "--no-preflight"),
        )
    assert server.requests == []


def test_a_key_with_a_trailing_newline_is_stripped_and_used(server, monkeypatch):
    """A key pasted with its newline (`$(cat key.txt)`, a secret file) is stripped, not
    refused: the preflight and every request send exactly the key."""
    monkeypatch.setenv(KEY_ENV, f"  {KEY}\n")
    preflight(engine_cfg(server, api_key_env=KEY_ENV))
    engine = ApiEngine(engine_cfg(server, api_key_env=KEY_ENV))
    try:
        [result] = engine.infer([page_request()])
    finally:
        engine.close()
    assert result.ok
    assert [r.is_preflight for r in server.requests] == [True, False]
    assert [r.header("authorization") for r in server.requests] == [f"Bearer {KEY}"] * 2


# -- concurrency and rate -------------------------------------------------------------------------


def test_max_concurrency_bounds_requests_in_flight(server, engines):
    server.always(slow(0.15))
    engine = engines(engine_cfg(server, max_concurrency=4))
    started = time.monotonic()
    results = engine.infer([page_request() for _ in range(16)])
    assert all(r.ok for r in results) and len(server.requests) == 16
    assert server.max_in_flight == 4  # never more, and really concurrent
    assert 4 * 0.15 <= time.monotonic() - started < 16 * 0.15


class VirtualClock:
    """Time for the rate limiter that moves only when the test moves it: a waiter's sleep
    returns at once and records when it would have woken (its scheduled start)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.wakes: list[float] = []
        self.waits = 0

    def clock(self) -> float:
        self.waits += 1
        return self.now

    async def sleep(self, delay: float) -> None:
        self.wakes.append(self.now + delay)
        await asyncio.sleep(0)

    def starts(self) -> list[float]:
        """Every scheduled start so far: a waiter that didn't sleep started at `now`."""
        return sorted([self.now] * (self.waits - len(self.wakes)) + self.wakes)


def test_rate_limiter_schedules_evenly_spaced_starts():
    clock = VirtualClock()
    limiter = _RateLimiter(600, clock=clock.clock, sleep=clock.sleep)  # one start per 0.1 s

    async def together(n: int) -> None:
        await asyncio.gather(*(limiter.wait() for _ in range(n)))

    asyncio.run(together(6))  # six at the same instant: 0.0, 0.1, ... 0.5
    assert clock.starts() == pytest.approx([i / 10 for i in range(6)])
    # after a long idle spell nothing is owed: the next start is now, then spaced again
    clock.now, clock.wakes, clock.waits = 10.0, [], 0
    asyncio.run(together(2))
    assert clock.starts() == pytest.approx([10.0, 10.1])
    clock.now, clock.wakes, clock.waits = 10.05, [], 0  # one more, before 10.1 has passed
    asyncio.run(together(1))
    assert clock.wakes == pytest.approx([10.2])
    assert _RateLimiter(None, clock=clock.clock, sleep=clock.sleep)._interval == 0.0


def test_requests_per_minute_spaces_the_starts(server, engines, monkeypatch):
    """The engine asks the limiter built from --requests-per-minute before every request;
    the scheduled starts are read from the limiter's clock, not measured."""
    clock = VirtualClock()
    limiter = functools.partial(_RateLimiter, clock=clock.clock, sleep=clock.sleep)
    monkeypatch.setattr(openai_engine, "_RateLimiter", limiter)
    engine = engines(engine_cfg(server, max_concurrency=8, requests_per_minute=600))
    results = engine.infer([page_request() for _ in range(6)])
    assert all(r.ok for r in results) and len(server.requests) == 6
    assert clock.starts() == pytest.approx([i / 10 for i in range(6)])  # 600/min: 0.1 s apart


# -- the key never leaks --------------------------------------------------------------------------


def test_the_key_never_appears_in_output_logs_errors_or_pickles(
    server, tmp_path, monkeypatch, caplog, capfd
):
    from apache_beam.internal import pickler
    from apache_beam.options.pipeline_options import PipelineOptions

    from vlbeam.pipeline.options import VlbeamOptions
    from vlbeam.pipeline.run import make_backend

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, KEY)
    # A provider that echoes the key back in its error messages; one page is rejected,
    # the other gets a 500 first (retried), then succeeds.
    not_check = lambda r: not r.is_preflight  # noqa: E731
    server.script(unauthorized(f"Incorrect API key provided: {KEY}"), match=not_check)
    server.script(server_error(500, f"upstream refused {KEY}"), match=not_check)
    out = tmp_path / "out"
    argv = [
        f"--input={SAMPLES_GLOB}",
        f"--output={out}",
        *api_args(server, "openrouter", f"--api-key-env={KEY_ENV}", "--stream", *PRICES),
    ]
    run_job([SAMPLES_GLOB], out, *argv[2:])

    assert all(r.header("authorization") == f"Bearer {KEY}" for r in server.requests)
    failures = read_table(out, "failures")
    assert [(f["error_type"], f["stage"]) for f in failures] == [("HTTP401", "inference")]
    assert "Incorrect API key provided: ***" in failures[0]["message"]
    assert len(read_table(out, "pages")) == 1

    secret = KEY.encode()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".json" for p in files)
    for path in files:
        assert secret not in path.read_bytes(), path
        if path.suffix == ".parquet":  # compressed pages: look at the values too
            assert KEY not in str(pq.read_table(path).to_pylist()), path
    assert KEY not in caplog.text
    assert KEY not in "".join(record.getMessage() for record in caplog.records)
    captured = capfd.readouterr()
    assert KEY not in captured.out + captured.err

    options = PipelineOptions(argv)
    opts = options.view_as(VlbeamOptions)
    assert secret not in pickle.dumps(options) and secret not in pickler.dumps(options)
    assert KEY not in json.dumps(options.get_all_options(), default=str)
    handler = make_backend(opts)  # runs the key check against the server once more
    assert server.requests[-1].is_preflight
    assert secret not in pickle.dumps(handler) and secret not in pickler.dumps(handler)
    assert KEY not in repr(handler) + repr(handler._cfg)
    # errors raised to the caller are redacted too
    server.always(unauthorized(f"Incorrect API key provided: {KEY}"))
    with pytest.raises(PreflightFailed) as info:
        make_backend(opts)
    assert "Incorrect API key provided: ***" in str(info.value)
    assert KEY not in "".join(traceback.format_exception(info.value))
    engine = ApiEngine(engine_cfg(server, api_key_env=KEY_ENV, max_attempts=1))
    try:
        [result] = engine.infer([page_request()])
    finally:
        engine.close()
    assert result.error_type == "HTTP401" and KEY not in result.error_message
    assert KEY not in caplog.text
