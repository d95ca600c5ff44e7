"""A checkpoint's processor is loaded once per process while its files are unchanged
(`load_processor`): an engine made again (in-process runs one after another) doesn't parse
the tokenizer again, and an edited checkpoint is read afresh."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

from tests.conftest import require_module
from vlbeam.transforms.backends import qwen_transformers
from vlbeam.transforms.backends.qwen_transformers import load_processor

transformers = require_module("transformers", "transformers")


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    seen: list[str] = []

    def from_pretrained(path):
        seen.append(path)
        return types.SimpleNamespace(tokenizer=types.SimpleNamespace(padding_side="right"))

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", from_pretrained)
    qwen_transformers._cached_processor.cache_clear()
    yield seen
    qwen_transformers._cached_processor.cache_clear()


def test_loaded_once_while_unchanged_and_again_after_an_edit(tmp_path: Path, loads):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "tokenizer.json").write_text("{}")
    (ckpt / "tokenizer_config.json").write_text("{}")

    first = load_processor(str(ckpt))
    assert load_processor(str(ckpt)) is first and loads == [str(ckpt)]
    assert first.tokenizer.padding_side == "left"  # set up for batched generate

    (ckpt / "tokenizer_config.json").write_text('{"model_max_length": 8}')  # edited in place
    os.utime(ckpt / "tokenizer_config.json", ns=(1, 1))  # whatever the clock's resolution
    second = load_processor(str(ckpt))
    assert second is not first and loads == [str(ckpt)] * 2

    other = tmp_path / "other"
    other.mkdir()
    (other / "tokenizer.json").write_text("{}")
    assert load_processor(str(other)) is not second and len(loads) == 3
