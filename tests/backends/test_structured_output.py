"""--extract's request fields per backend, against the shapes the servers document:
vLLM / SGLang (managed) and `--provider openai`: chat `response_format` json_schema (vLLM's
removed `guided_json` is never sent); DashScope (VL models): json_object with the schema in
the prompt; AIML API: nothing (prompt + validate + retry); other request styles: nothing."""

from __future__ import annotations

import json

import pytest

from vlbeam.schemas.elements import VLRequest
from vlbeam.transforms.backends.openai_protocol import (
    api_config_from_preset,
    build_body,
    guided_mechanism,
)

SCHEMA = {"title": "Form 1040/EZ", "type": "object", "properties": {"a": {"type": "string"}}}
TEXT = json.dumps(SCHEMA, sort_keys=True, separators=(",", ":"))


def body_for(provider: str, **kw) -> dict:
    cfg = api_config_from_preset(provider, base_url="http://h/v1", model="m", **kw)
    return build_body(cfg, VLRequest(images=(), prompt="JSON please", json_schema=TEXT))


@pytest.mark.parametrize("provider", ["openai", "openrouter", "vercel"])
def test_json_schema_providers_send_response_format_json_schema(provider):
    body = body_for(provider)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Form_1040_EZ", "schema": SCHEMA, "strict": True},
    }
    assert not {"guided_json", "structured_outputs", "json_schema"} & set(body)


def test_managed_vllm_and_sglang_requests_use_response_format_json_schema():
    from vlbeam.pipeline.options import VlbeamOptions, server_api_config
    from vlbeam.transforms.backends.managed_handler import ManagedServerHandler

    for kind in ("vllm", "sglang"):
        opts = VlbeamOptions([f"--backend={kind}", "--model=Qwen/Qwen3-VL-2B-Instruct"])
        api = server_api_config(opts)
        handler = ManagedServerHandler(kind, spec=None, api=api, model="m")
        assert handler.guided == "response_format:json_schema"
        body = build_body(api, VLRequest(images=(), prompt="p", json_schema=TEXT))
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == SCHEMA


def test_dashscope_vl_gets_json_object_and_the_prompt_names_json():
    body = body_for("dashscope")
    assert body["response_format"] == {"type": "json_object"}
    assert "JSON" in body["messages"][0]["content"][-1]["text"]  # DashScope requires the word


def test_provider_without_documented_support_sends_no_field():
    body = body_for("aimlapi")
    assert "response_format" not in body
    cfg = api_config_from_preset("aimlapi", model="m")
    assert guided_mechanism(cfg) == "none"


def test_non_chat_styles_send_nothing_and_say_none():
    cfg = api_config_from_preset("openai", base_url="http://h/v1", model="m", style="completions")
    body = build_body(cfg, VLRequest(images=(), prompt="p", json_schema=TEXT))
    assert "response_format" not in body and guided_mechanism(cfg) == "none"


def test_requests_without_a_schema_are_unchanged():
    cfg = api_config_from_preset("openai", base_url="http://h/v1", model="m")
    assert "response_format" not in build_body(cfg, VLRequest(images=(), prompt="p"))
