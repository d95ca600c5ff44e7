"""The pure parts of the API backend: request bodies per style and preset, response and SSE
parsing, error messages, Retry-After, backoff, config validation, cost."""

from __future__ import annotations

import base64
import io
import json
import random
import time
from email.utils import formatdate

import pytest
from PIL import Image

from vlbeam.schemas.elements import VLRequest
from vlbeam.schemas.redaction import redact
from vlbeam.transforms.backends.openai_engine import (
    MissingApiKey,
    backoff_delay,
    read_api_key,
    retry_after_seconds,
)
from vlbeam.transforms.backends.openai_protocol import (
    PRESETS,
    QWEN_STOP,
    VISION_PLACEHOLDER,
    ApiConfig,
    StreamAccumulator,
    StreamError,
    api_config_from_preset,
    build_body,
    data_uri,
    even_fps,
    http_error_message,
    parse_response,
    preflight_request,
    split_thinking,
    timestamp_text,
)

BASE = "http://127.0.0.1:9/v1"


def image_bytes(fmt: str, size=(8, 6), color="white") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG, WEBP = image_bytes("PNG"), image_bytes("JPEG"), image_bytes("WEBP")


def cfg(**kw) -> ApiConfig:
    return ApiConfig(**{"provider": "openai", "base_url": BASE, "model": "m", **kw})


# -- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "mime"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")]
)
def test_data_uri_has_the_right_mime_and_round_trips(image, mime):
    uri = data_uri(image)
    head, _, payload = uri.partition(",")
    assert head == f"data:{mime};base64"
    assert base64.b64decode(payload) == image


def test_chat_body_for_a_page():
    body = build_body(cfg(), VLRequest(images=(PNG,), prompt="Read this page."))
    assert body == {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_uri(PNG)}},
                    {"type": "text", "text": "Read this page."},
                ],
            }
        ],
        "max_tokens": 2048,
        "temperature": 0.0,
    }


def test_chat_body_options_stream_and_extra_body():
    config = cfg(
        temperature=0.7, top_p=0.9, seed=5, stop=("END",), stream=True, max_tokens=100,
        extra_body=json.dumps({"top_k": 20, "temperature": 0.1}),
    )  # fmt: skip
    body = build_body(config, VLRequest(images=(JPEG,), prompt="p", max_new_tokens=7))
    assert body["max_tokens"] == 7  # the request's own limit wins over the config's
    assert body["top_p"] == 0.9 and body["seed"] == 5 and body["stop"] == ["END"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["top_k"] == 20 and body["temperature"] == 0.1  # extra body merged last
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith(
        "data:image/jpeg;base64,"
    )
    assert "stream" not in build_body(config, VLRequest(images=(), prompt="p"), stream=False)


def test_chat_video_frames_interleave_timestamps_before_each_image():
    frames = (JPEG, PNG, JPEG)
    request = VLRequest(images=frames, prompt="When?", frame_times_s=(12.5, 13.0, 61.25))
    content = build_body(cfg(), request)["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url"] * 3 + ["text"]
    assert [p["text"] for p in content[0:6:2]] == [
        "<12.5 seconds>",
        "<13.0 seconds>",
        timestamp_text(61.25),
    ]
    assert [p["image_url"]["url"] for p in content[1:6:2]] == [data_uri(f) for f in frames]
    assert content[-1] == {"type": "text", "text": "When?"}


def test_native_video_only_for_even_frames_from_zero():
    frames = (JPEG,) * 4
    native = cfg(provider="dashscope", native_video=True)
    even = VLRequest(images=frames, prompt="q", frame_times_s=(0.0, 0.5, 1.0, 1.5))
    content = build_body(native, even)["messages"][0]["content"]
    assert content[0]["type"] == "video" and content[0]["fps"] == pytest.approx(2.0)
    assert content[0]["video"] == [data_uri(JPEG)] * 4 and content[1]["text"] == "q"
    # a later window or uneven frames keep the interleaved form (the server derives times)
    later = VLRequest(images=frames, prompt="q", frame_times_s=(10.0, 10.5, 11.0, 11.5))
    uneven = VLRequest(images=frames, prompt="q", frame_times_s=(0.0, 0.5, 1.3, 1.5))
    for request in (later, uneven):
        parts = build_body(native, request)["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["text", "image_url"] * 4 + ["text"]
    assert even_fps([0.0, 0.5, 1.3]) is None and even_fps([1.0]) is None


def test_completions_body_is_a_raw_prompt_with_one_placeholder_per_image():
    config = cfg(style="completions")
    body = build_body(config, VLRequest(images=(PNG, JPEG), prompt="Read."))
    assert body["prompt"] == (
        f"<|im_start|>user\n{VISION_PLACEHOLDER}{VISION_PLACEHOLDER}Read.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert body["images"] == [data_uri(PNG), data_uri(JPEG)]
    assert body["stop"] == list(QWEN_STOP) == ["<|im_end|>", "<|endoftext|>"]
    assert "messages" not in body and body["max_tokens"] == 2048
    video = VLRequest(images=(JPEG, JPEG), prompt="q", frame_times_s=(1.0, 2.5))
    prompt = build_body(config, video)["prompt"]
    assert f"<1.0 seconds>{VISION_PLACEHOLDER}<2.5 seconds>{VISION_PLACEHOLDER}q" in prompt
    streamed = build_body(cfg(style="completions", stop=("X",), stream=True), video)
    assert streamed["stop"] == ["X"] and streamed["stream"] is True
    assert "stream_options" not in streamed


def test_images_prompt_body():
    config = cfg(style="images_prompt", base_url="http://h/v1/vl/generate")
    body = build_body(config, VLRequest(images=(PNG,), prompt="Read."))
    assert body == {
        "model": "m",
        "images": [data_uri(PNG)],
        "prompt": "Read.",
        "max_tokens": 2048,
        "temperature": 0.0,
    }
    video = VLRequest(images=(JPEG, JPEG), prompt="When?", frame_times_s=(3.0, 3.5))
    assert build_body(config, video)["prompt"] == (
        "The images are video frames at these times (seconds): 3.0, 3.5.\nWhen?"
    )
    assert config.endpoint() == "http://h/v1/vl/generate"


def test_endpoints_per_style():
    assert cfg(base_url="http://h/v1/").endpoint() == "http://h/v1/chat/completions"
    assert cfg(style="completions").endpoint() == f"{BASE}/completions"


def test_aimlapi_uses_max_completion_tokens():
    config = api_config_from_preset("aimlapi", max_tokens=300, seed=1)
    body = build_body(config, VLRequest(images=(PNG,), prompt="p"))
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body
    assert body["seed"] == 1
    pre = preflight_request(config)
    assert pre["max_completion_tokens"] == 1 and "max_tokens" not in pre
    assert pre["messages"][0]["content"] == [{"type": "text", "text": "Reply with OK."}]
    assert "stream" not in preflight_request(api_config_from_preset("aimlapi", stream=True))


# -- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "base_url", "model", "key_env"),
    [
        ("dashscope", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "qwen3-vl-flash",
         "DASHSCOPE_API_KEY"),
        ("openrouter", "https://openrouter.ai/api/v1", "qwen/qwen3-vl-235b-a22b-thinking",
         "OPENROUTER_API_KEY"),
        ("vercel", "https://ai-gateway.vercel.sh/v1", "alibaba/qwen3-vl-instruct",
         "AI_GATEWAY_API_KEY"),
        ("aimlapi", "https://api.aimlapi.com/v1", "alibaba/qwen3-vl-32b-instruct",
         "AIMLAPI_API_KEY"),
    ],
)  # fmt: skip
def test_preset_defaults_and_overrides(provider, base_url, model, key_env):
    config = api_config_from_preset(provider)
    assert (config.base_url, config.model, config.api_key_env) == (base_url, model, key_env)
    assert config.style == "chat" and config.provider == provider
    assert config.endpoint() == f"{base_url}/chat/completions"
    over = api_config_from_preset(
        provider, base_url="http://127.0.0.1:1/v1", model="x", api_key_env="MY_KEY"
    )
    assert (over.base_url, over.model, over.api_key_env) == ("http://127.0.0.1:1/v1", "x", "MY_KEY")
    assert api_config_from_preset(provider, api_key_env="").api_key_env == ""


def test_openai_preset_needs_a_base_url_and_a_model():
    with pytest.raises(ValueError, match="needs --base-url"):
        api_config_from_preset("openai")
    with pytest.raises(ValueError, match="--api-model"):
        api_config_from_preset("openai", base_url=BASE)
    config = api_config_from_preset("openai", base_url=BASE, model="served")
    assert config.api_key_env == "OPENAI_API_KEY" and config.max_tokens_field == "max_tokens"
    with pytest.raises(ValueError, match="--provider must be one of"):
        api_config_from_preset("nope")


@pytest.mark.parametrize(
    ("provider", "allowed"),
    [
        ("dashscope", {"vl_high_resolution_images": True, "enable_thinking": False,
                       "thinking_budget": 100}),
        ("openrouter", {"reasoning": {"effort": "high"}, "provider": {"order": ["a"]},
                        "usage": {"include": True}}),
        ("vercel", {"providerOptions": {"gateway": {"order": ["alibaba"]}}}),
        ("aimlapi", {"repetition_penalty": 1.05, "max_completion_tokens": 64}),
    ],
)  # fmt: skip
def test_extra_body_fields_are_checked_against_the_preset(provider, allowed):
    config = api_config_from_preset(provider, extra_body=allowed)
    assert build_body(config, VLRequest(images=(), prompt="p")).items() >= allowed.items()
    with pytest.raises(ValueError, match=r"'vl_high_res_images'.*not documented"):
        api_config_from_preset(provider, extra_body={**allowed, "vl_high_res_images": True})


def test_extra_body_fields_of_one_preset_are_refused_by_another():
    with pytest.raises(ValueError, match="enable_thinking"):
        api_config_from_preset("vercel", extra_body={"enable_thinking": True})
    with pytest.raises(ValueError, match="max_tokens"):  # aimlapi documents the other name
        api_config_from_preset("aimlapi", extra_body={"max_tokens": 10})
    # the generic preset is any OpenAI-compatible server: anything goes
    config = api_config_from_preset("openai", base_url=BASE, model="m", extra_body={"x_y": 1})
    assert config.extra_body_dict == {"x_y": 1}


def test_aimlapi_seed_and_stop_limits():
    with pytest.raises(ValueError, match="seed >= 1"):
        api_config_from_preset("aimlapi", seed=0)
    assert api_config_from_preset("aimlapi", seed=1).seed == 1
    with pytest.raises(ValueError, match="at most 4 stop"):
        api_config_from_preset("aimlapi", stop=("a", "b", "c", "d", "e"))
    assert len(api_config_from_preset("aimlapi", stop=("a", "b", "c", "d")).stop) == 4
    # other providers take seed 0 and more stop strings
    assert api_config_from_preset("openrouter", seed=0, stop=tuple("abcde")).seed == 0


def test_aimlapi_limits_also_apply_to_extra_body():
    with pytest.raises(ValueError, match=r"^aimlapi needs seed >= 1"):
        api_config_from_preset("aimlapi", extra_body={"seed": 0})


def test_native_video_only_where_documented():
    assert PRESETS["dashscope"].native_video
    assert api_config_from_preset("dashscope", native_video=True).native_video
    with pytest.raises(ValueError, match="no native video"):
        api_config_from_preset("openrouter", native_video=True)


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"style": "grpc"}, "api style"),
        ({"base_url": "ftp://h/v1"}, "http"),
        ({"base_url": "127.0.0.1:8000/v1"}, "http"),
        ({"model": ""}, "model"),
        ({"extra_body": "[1, 2]"}, "JSON object"),
        ({"extra_body": "{not json"}, "Expecting"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"requests_per_minute": -5}, "requests_per_minute"),
    ],
)
def test_api_config_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        cfg(**kw)


def test_cost_usd():
    priced = cfg(price_input_per_mtok=0.5, price_output_per_mtok=2.0)
    assert priced.cost_usd(1_000_000, 500_000) == pytest.approx(1.5)
    assert priced.cost_usd(1000, 20) == pytest.approx((1000 * 0.5 + 20 * 2.0) / 1e6)
    assert priced.cost_usd(None, 100) == pytest.approx(100 * 2.0 / 1e6)
    assert cfg(price_input_per_mtok=0.5).cost_usd(10, 10) is None
    assert cfg().cost_usd(10, 10) is None
    from_flags = api_config_from_preset(
        "vercel", price_input_per_mtok=0.2, price_output_per_mtok=0.8
    )
    assert from_flags.cost_usd(10_000, 1_000) == pytest.approx(0.0028)


def test_a_zero_price_is_a_price():
    config = api_config_from_preset("vercel", price_input_per_mtok=0.0, price_output_per_mtok=2.0)
    assert config.cost_usd(1000, 1000) == pytest.approx(0.002)


# -- responses ------------------------------------------------------------------------------------


def test_parse_chat_response():
    payload = {
        "id": "chatcmpl-1",
        "model": "qwen3-vl-flash-2025",
        "choices": [{"message": {"role": "assistant", "content": "# Title"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 12, "total_tokens": 912},
    }  # fmt: skip
    answer = parse_response(payload, request_id="hdr-1")
    assert (answer.text, answer.reasoning, answer.finish_reason) == ("# Title", None, "stop")
    assert (answer.input_tokens, answer.output_tokens) == (900, 12)
    assert (answer.served_model, answer.request_id) == ("qwen3-vl-flash-2025", "chatcmpl-1")
    del payload["id"]
    assert parse_response(payload, request_id="hdr-1").request_id == "hdr-1"


def test_parse_text_completion_and_images_prompt_usage():
    payload = {
        "object": "text_completion",
        "choices": [{"text": "hello", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "total_tokens": 8},
    }
    answer = parse_response(payload)
    assert (answer.text, answer.finish_reason) == ("hello", "length")
    assert (answer.input_tokens, answer.output_tokens) == (5, 3)  # from total_tokens
    flash = {
        "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
        "usage": {"input_tokens": 50, "output_tokens": 4,
                  "prompt_tokens_details": {"image_tokens": 40}},
    }  # fmt: skip
    assert (parse_response(flash).input_tokens, parse_response(flash).output_tokens) == (50, 4)


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_parse_reasoning_field_stays_out_of_text(field):
    payload = {"choices": [{"message": {"content": "answer", field: "because"}}]}
    answer = parse_response(payload)
    assert (answer.text, answer.reasoning) == ("answer", "because")
    assert answer.input_tokens is None and answer.request_id is None


def test_parse_think_tags_and_content_parts():
    payload = {"choices": [{"message": {"content": "<think>\nstep 1\n</think>\n\n# Page"}}]}
    answer = parse_response(payload)
    assert (answer.text, answer.reasoning) == ("# Page", "step 1")
    parts = {"choices": [{"message": {"content": [{"type": "text", "text": "a"},
                                                  {"type": "text", "text": "b"}]}}]}  # fmt: skip
    assert parse_response(parts).text == "ab"
    empty = {"choices": [{"message": {"content": None}, "finish_reason": "length"}]}
    assert parse_response(empty).text == "" and parse_response(empty).reasoning is None


def test_parse_aiml_meta_usage():
    payload = {
        "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
        "meta": {"usage": {"tokens_used": 1234}},
    }
    answer = parse_response(payload)
    assert (answer.input_tokens, answer.output_tokens) == (None, 1234)
    both = {**payload, "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    assert (parse_response(both).input_tokens, parse_response(both).output_tokens) == (1, 2)


def test_parse_response_without_choices():
    with pytest.raises(ValueError, match="no choices"):
        parse_response({"id": "x", "choices": []})
    with pytest.raises(ValueError, match="no choices"):
        parse_response({"error": {"message": "overloaded"}})


@pytest.mark.parametrize(
    ("text", "answer", "reasoning"),
    [
        ("plain", "plain", None),
        ("<think>a</think>b", "b", "a"),
        ("<think> a </think>\n b \n", "b", "a"),
        ("no opening</think>answer", "answer", "no opening"),
        ("<think>cut off before the end", "", "cut off before the end"),
        ("<think></think>x", "x", None),
        ("<think>1</think>x<think>2</think>y", "xy", "1\n2"),
    ],
)
def test_split_thinking(text, answer, reasoning):
    assert split_thinking(text) == (answer, reasoning)


def sse(chunk) -> str:
    return f"data: {json.dumps(chunk)}"


def test_stream_accumulator_chat():
    acc = StreamAccumulator()
    lines = [
        ": keep-alive comment",
        "",
        "event: message",
        sse({"id": "s1", "model": "served", "choices": [{"delta": {"role": "assistant"}}]}),
        sse({"choices": [{"delta": {"reasoning_content": "hm"}}]}),
        sse({"choices": [{"delta": {"content": "Hel"}}]}),
        sse({"choices": [{"delta": {"content": "lo"}, "finish_reason": None}]}),
        sse({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
        sse({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}),
    ]
    for line in lines:
        acc.feed_line(line + "\n")
    assert not acc.done
    acc.feed_line("data: [DONE]\n")
    assert acc.done
    answer = acc.answer("hdr")
    assert (answer.text, answer.reasoning, answer.finish_reason) == ("Hello", "hm", "stop")
    assert (answer.input_tokens, answer.output_tokens) == (7, 2)
    assert (answer.served_model, answer.request_id) == ("served", "s1")


def test_stream_accumulator_text_completion_with_think_split_across_chunks():
    acc = StreamAccumulator()
    for piece in ["<thi", "nk>why</th", "ink>", "the answer"]:
        acc.feed_line(sse({"object": "text_completion", "choices": [{"text": piece}]}))
    acc.feed_line(sse({"object": "text_completion",
                       "choices": [{"text": "", "finish_reason": "length"}]}))  # fmt: skip
    acc.feed_line("data:[DONE]")
    answer = acc.answer("hdr-2")
    assert (answer.text, answer.reasoning) == ("the answer", "why")
    assert answer.finish_reason == "length" and answer.request_id == "hdr-2"
    assert answer.input_tokens is None and answer.served_model is None


def test_stream_error_chunk_and_broken_chunk():
    acc = StreamAccumulator()
    with pytest.raises(StreamError, match="overloaded"):
        acc.feed_line(sse({"error": {"message": "overloaded", "code": 503}}))
    with pytest.raises(json.JSONDecodeError, match="Expecting value"):
        StreamAccumulator().feed_line('data: {"choices": [')


# -- errors, retries ------------------------------------------------------------------------------


def test_error_message_reads_the_provider_error():
    body = json.dumps({"error": {"message": "Invalid key", "type": "invalid_request_error",
                                 "param": None, "code": "invalid_api_key"}})  # fmt: skip
    assert http_error_message(401, body.encode()) == (
        "HTTP 401: Invalid key (invalid_request_error, invalid_api_key)"
    )
    assert http_error_message(400, '{"error": "bad thing"}') == "HTTP 400: bad thing"
    detail = http_error_message(422, '{"detail": "field required"}')  # FastAPI-style servers
    assert detail.startswith("HTTP 422: ") and "field required" in detail
    assert (
        http_error_message(502, b"<html>Bad Gateway</html>") == "HTTP 502: <html>Bad Gateway</html>"
    )
    assert http_error_message(500, b"") == "HTTP 500: (empty body)"
    assert len(http_error_message(500, "x" * 5000)) < 600
    assert http_error_message(500, "[1, 2]") == "HTTP 500: [1, 2]"


def test_retry_after_seconds():
    now = time.time()
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds("-4") == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("") is None
    assert retry_after_seconds("soon") is None
    date = formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(date, now=now) == pytest.approx(30, abs=1.01)
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_backoff_delay_is_jittered_within_half_cap_and_cap():
    config = cfg(backoff_base_s=0.5, backoff_max_s=5.0)
    rng = random.Random(1)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (12, 5.0)]:
        delays = [backoff_delay(attempt, config, rng) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > cap / 4  # really jittered, not a constant
    assert backoff_delay(60, config, rng) <= 5.0  # no overflow far out


def test_api_key_is_read_from_the_named_variable(monkeypatch):
    monkeypatch.delenv("VLBEAM_TEST_NO_SUCH_KEY", raising=False)
    config = cfg(provider="aimlapi", api_key_env="VLBEAM_TEST_NO_SUCH_KEY")
    with pytest.raises(MissingApiKey, match="VLBEAM_TEST_NO_SUCH_KEY") as info:
        read_api_key(config)
    assert "--provider aimlapi" in str(info.value)
    monkeypatch.setenv("VLBEAM_TEST_NO_SUCH_KEY", "k-123")
    assert read_api_key(config) == "k-123"
    assert read_api_key(cfg(api_key_env="")) is None and read_api_key(cfg()) is None


def test_redact():
    assert redact("key sk-1 and sk-1 again", ["sk-1", ""]) == "key *** and *** again"
    assert redact("nothing", []) == "nothing"


# -- flags → config -------------------------------------------------------------------------------


def options(*argv: str):
    from apache_beam.options.pipeline_options import PipelineOptions

    from vlbeam.pipeline.options import VlbeamOptions

    return PipelineOptions(list(argv)).view_as(VlbeamOptions)


def test_flags_build_the_config():
    from vlbeam.pipeline.options import api_config

    config = api_config(options(
        "--backend=openai", "--provider=openrouter", "--provider-order=alibaba, novita",
        "--reasoning-effort=high", "--api-header=HTTP-Referer=https://example.org",
        "--api-header=X-Title=vlbeam tests", "--seed=4", "--stream", "--max-concurrency=3",
        "--requests-per-minute=90", "--request-timeout-s=12", "--max-attempts=2",
        "--max-new-tokens=99", "--extra-body", '{"usage": {"include": true}}',
    ))  # fmt: skip
    assert config.extra_body_dict == {
        "provider": {"order": ["alibaba", "novita"]},
        "reasoning": {"effort": "high"},
        "usage": {"include": True},
    }
    assert config.headers == (("HTTP-Referer", "https://example.org"), ("X-Title", "vlbeam tests"))
    assert (config.seed, config.stream, config.max_concurrency) == (4, True, 3)
    assert (config.requests_per_minute, config.timeout_s, config.max_attempts) == (90, 12, 2)
    assert config.max_tokens == 99
    vercel = api_config(options("--provider=vercel", "--provider-order=alibaba,deepinfra"))
    assert vercel.extra_body_dict == {
        "providerOptions": {"gateway": {"order": ["alibaba", "deepinfra"]}}
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--provider=vercel", "--api-header=Authorization=Bearer x"], "Authorization"),
        (["--provider=vercel", "--api-header=novalue"], "NAME=VALUE"),
        (["--provider=vercel", "--extra-body=[]"], "JSON object"),
        (["--provider=dashscope", "--reasoning-effort=low"], "reasoning"),
        (["--provider=aimlapi", "--provider-order=a,b"], "provider"),
        (["--provider=aimlapi", "--seed=0"], "seed"),
    ],
)
def test_bad_flags_fail_at_config_time(argv, message):
    from vlbeam.pipeline.options import api_config

    with pytest.raises(ValueError, match=message):
        api_config(options(*argv))
