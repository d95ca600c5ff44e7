# ruff: noqa: E402  (the test dependency check runs before the imports that need it)
"""The local transformers backend under llguidance-constrained decoding: the random-weight
tiny Qwen3-VL emits schema-valid JSON for a schema with nested objects, arrays, enums and
required fields, every time; without the constraint it does not (the figure is printed)."""

from __future__ import annotations

import pytest

from tests.conftest import require_module

require_module("llguidance", "transformers")
require_module("jsonschema", "extract")
require_module("torch", "transformers")

from vlbeam.schemas.config import ModelConfig
from vlbeam.schemas.elements import VLRequest
from vlbeam.transforms.answers.extraction import canonical_json, read_answer
from vlbeam.transforms.backends.qwen_transformers import generate_batch, load_qwen

SCHEMA = {
    "title": "Invoice",
    "type": "object",
    "properties": {
        "number": {"type": "string", "maxLength": 16},
        "status": {"enum": ["paid", "open", "void"]},
        "seller": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "country": {"enum": ["DE", "FR", "US"]},
            },
            "required": ["name", "country"],
            "additionalProperties": False,
        },
        "lines": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "maxLength": 8},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                },
                "required": ["sku", "qty"],
                "additionalProperties": False,
            },
        },
        "paid": {"type": "boolean"},
    },
    "required": ["number", "status", "seller", "lines"],
    "additionalProperties": False,
}
TEXTS = [
    "Invoice 17 from ACME GmbH, Germany: 3 x bolts.",
    "Rechnung R-2, Muster SARL (France), offen.",
    "Void invoice #9 of Foo Inc, US, no lines.",
    "INV-44 paid; seller Bar Ltd; 2 x nuts, 5 x washers.",
]


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_qwen(ModelConfig(model=str(tiny_model), device="cpu", dtype="float32"))


def requests(schema_text: str | None) -> list[VLRequest]:
    return [
        VLRequest(
            images=(), prompt=f"Extract JSON:\n{text}", max_new_tokens=120, json_schema=schema_text
        )
        for text in TEXTS
    ]


@pytest.mark.slow
def test_tiny_model_is_always_schema_valid_under_constrained_decoding(loaded):
    text = canonical_json(SCHEMA)
    results = generate_batch(loaded, requests(text), ModelConfig(model="tiny", max_new_tokens=120))
    checked = [read_answer(text, r.text) for r in results]
    assert [errors for _, errors in checked] == [[]] * len(TEXTS), [r.text for r in results]
    assert all(r.finish_reason == "stop" for r in results)
    assert all(isinstance(value["seller"], dict) for value, _ in checked)

    plain = generate_batch(loaded, requests(None), ModelConfig(model="tiny", max_new_tokens=120))
    unconstrained = sum(not read_answer(text, r.text)[1] for r in plain)
    print(f"tiny random model: {len(TEXTS)}/{len(TEXTS)} valid constrained, "
          f"{unconstrained}/{len(TEXTS)} without")  # fmt: skip
    assert unconstrained < len(TEXTS)  # the constraint is what makes it valid
