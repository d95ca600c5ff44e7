"""The local transformers backend loads the Qwen2.5-VL family (olmOCR 2, Nanonets-OCR2) through
the Auto classes: a tiny random Qwen2.5-VL checkpoint built offline (patch 14, window
attention, the real Qwen tokenizer, Qwen2.5-VL's chat template) through `from_pretrained`,
batched `generate`, and `vlbeam run --model-preset olmocr-2`."""

from __future__ import annotations

import io

from PIL import Image

from tests.pipeline_helpers import SAMPLES_GLOB, read_table, run_job
from vlbeam.pipeline.prompts import builtin_prompt
from vlbeam.schemas.config import ModelConfig
from vlbeam.schemas.elements import VLRequest
from vlbeam.transforms.backends.qwen_transformers import (
    generate_batch,
    load_qwen,
    processor_inputs,
)
from vlbeam.transforms.backends.tiny_model import TINY_RANDOM_QWEN25


def png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, "PNG")
    return buf.getvalue()


def test_auto_classes_load_qwen25_and_keep_the_message_order(tiny_qwen25_model):
    cfg = ModelConfig(model=TINY_RANDOM_QWEN25, device="cpu", max_new_tokens=3)
    loaded = load_qwen(cfg)
    assert type(loaded.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    prompt = builtin_prompt("olmocr2_v4_yaml_v1").text
    text_first = VLRequest(images=(png((300, 388)),), prompt=prompt, prompt_first=True)
    image_first = VLRequest(images=(png((388, 300)),), prompt="qwenvl markdown")
    inputs = processor_inputs(loaded.processor, [text_first, image_first])
    decoded = [loaded.processor.tokenizer.decode(ids) for ids in inputs["input_ids"]]
    # Qwen2.5-VL's template adds its default system message; olmOCR's text precedes the image
    assert all("<|im_start|>system\nYou are a helpful assistant.<|im_end|>" in d for d in decoded)
    user = decoded[0].split("<|im_start|>user\n", 1)[1]
    assert user.startswith(prompt) and user[len(prompt) :].startswith("<|vision_start|>")
    assert decoded[1].split("<|im_start|>user\n", 1)[1].startswith("<|vision_start|>")
    # patch 14 merged 2 x 2: 28 px per token side (300 x 388 -> 308 x 392 -> 11 x 14 tokens)
    assert inputs["image_grid_thw"].tolist()[0] == [1, 28, 22]
    results = generate_batch(loaded, [text_first, image_first], cfg)
    assert [r.output_tokens <= 3 for r in results] == [True, True]
    assert all(r.text is not None and r.input_tokens > 154 for r in results)


def test_olmocr_preset_on_the_local_backend(tiny_qwen25_model, tmp_path):
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, "--model-preset=olmocr-2", f"--model={TINY_RANDOM_QWEN25}",
            "--max-new-tokens=4", "--max-batch-size=2", "--run-id=q25")  # fmt: skip
    assert read_table(out, "failures") == []
    pages = read_table(out, "pages")
    assert len(pages) == 2 and {p["prompt_id"] for p in pages} == {"olmocr2_v4_yaml_v1"}
    for page in pages:  # random weights: never front matter, so kept raw and flagged
        assert max(page["width_px"], page["height_px"]) == 1288
        assert page["page_meta"] is None and "unparsed" in page["quality_flags"]
        assert page["text"] is not None and page["output_tokens"] <= 4
