"""Qwen-VL models on local `transformers` (GPU in bf16, CPU works): loading, batched generation
with exact video timestamps, and the backend that feeds it through a `BatchingEngine`.

The model is loaded with transformers' Auto classes (`AutoModelForImageTextToText`,
`AutoProcessor`), which pick the class from the checkpoint's `config.json`: Qwen3-VL (vlbeam's
default), Qwen2.5-VL (olmOCR 2, Nanonets-OCR2), Qwen3.5 (Chandra 2), one code path. Video
timestamps are Qwen3-VL's convention (`video_metadata`); the OCR presets send pages only."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vlbeam.schemas.config import ModelConfig
from vlbeam.schemas.elements import VLRequest, VLResult
from vlbeam.schemas.errors import ModelNotFound
from vlbeam.transforms.backends.engine import BatchingEngine
from vlbeam.transforms.backends.tiny_model import FAMILIES as TINY_MODELS
from vlbeam.transforms.backends.tiny_model import TINY_RANDOM, resolve_model_path

logger = logging.getLogger(__name__)

BACKEND = "transformers"


@dataclass
class LoadedQwen:
    """What `load_model` returns: the model, its processor and where it runs."""

    model: Any
    processor: Any
    device: str
    stop_token_ids: frozenset[int]
    json_ctx: Any = None  # --extract: the llguidance tokenizer, built on first use


def json_context(loaded: LoadedQwen):
    """The loaded model's `json_constraint.LlgJson` (built once: ~1-2 s of tokenizer work)."""
    if loaded.json_ctx is None:
        from vlbeam.transforms.backends.json_constraint import LlgJson

        config = loaded.model.config
        vocab = getattr(getattr(config, "text_config", None), "vocab_size", None)
        eos = loaded.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        stops = [t for t in eos if t in loaded.stop_token_ids] or sorted(loaded.stop_token_ids)
        loaded.json_ctx = LlgJson(loaded.processor.tokenizer, vocab or config.vocab_size, stops)
    return loaded.json_ctx


def guided_locally() -> str:
    """What constrains --extract answers of the local backend: llguidance when installed."""
    import importlib.util

    return "llguidance" if importlib.util.find_spec("llguidance") else "none"


def check_model_available(model: str) -> None:
    """Fail fast in the launcher when `--model` can't possibly load on this machine.

    A local folder must hold a `config.json`; a hub id must be in the local cache
    unless the hub is reachable (HF_HUB_OFFLINE=1 means it isn't).
    """
    if model in TINY_MODELS:
        return
    if os.path.isdir(model) or model.startswith((".", "/", "~")):
        if not os.path.isfile(os.path.join(os.path.expanduser(model), "config.json")):
            raise ModelNotFound(
                f"--model {model!r} is not a folder with a Qwen3-VL checkpoint (no config.json)"
            )
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelNotFound(_not_found_message(model, "HF_HUB_OFFLINE=1 is set"))
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(model, timeout=10)
    except Exception as exc:
        raise ModelNotFound(_not_found_message(model, f"the hub is unreachable: {exc}")) from None


def _not_found_message(model: str, why: str) -> str:
    return (
        f"model {model!r} is not a local folder, not in the Hugging Face cache, and can't be "
        f"downloaded ({why}). Pass --model /path/to/a/Qwen3-VL/checkpoint (a folder with "
        f"config.json and weights), or --model {TINY_RANDOM} for a smoke test with random weights."
    )


# The files a processor is read from: a cached one is used while none of them changed.
_PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json",
                    "preprocessor_config.json", "chat_template.jinja")  # fmt: skip


def _processor_stamp(path: str) -> tuple:
    """(name, size, mtime) of each processor file of a local checkpoint folder; () for a hub
    id (a hub snapshot never changes under its revision)."""
    if not os.path.isdir(path):
        return ()
    stamp = []
    for name in _PROCESSOR_FILES:
        with contextlib.suppress(OSError):
            st = os.stat(os.path.join(path, name))
            stamp.append((name, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


@functools.lru_cache(maxsize=4)
def _cached_processor(path: str, _stamp: tuple):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"  # batched generate; nothing else changes it
    return processor


def load_processor(path: str):
    """The checkpoint's processor, loaded once per process while its files are unchanged.
    Reading Qwen's 151k-token tokenizer takes ~1.7 s of CPU (transformers parses its
    tokenizer.json in Python), so a process that creates its engine again (in-process runs one
    after another, a notebook, the test suite) doesn't pay it each time. The processor is only
    read once set up; the model weights are never cached (a closed engine frees its device)."""
    return _cached_processor(path, _processor_stamp(path))


def load_qwen(cfg: ModelConfig) -> LoadedQwen:
    """Load `AutoModelForImageTextToText` + `AutoProcessor` from a folder or hub id (the
    checkpoint's config names its class: Qwen3-VL, Qwen2.5-VL, ...)."""
    import torch
    from transformers import AutoModelForImageTextToText

    path = resolve_model_path(cfg.model)
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {
        "auto": torch.bfloat16 if device == "cuda" else torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float32": torch.float32,
    }[cfg.dtype]
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    started = time.monotonic()
    try:
        processor = load_processor(path)
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelNotFound(_not_found_message(cfg.model, str(exc).splitlines()[0])) from None
    model.to(device).eval()
    stop = model.generation_config.eos_token_id
    stop_ids = frozenset([stop] if isinstance(stop, int) else (stop or []))
    stop_ids |= {processor.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    logger.info(
        "loaded %s on %s (%s) in %.1f s", cfg.model, device, dtype, time.monotonic() - started
    )
    return LoadedQwen(model=model, processor=processor, device=device, stop_token_ids=stop_ids)


def decode_images(request: VLRequest) -> list:
    from PIL import Image

    return [Image.open(io.BytesIO(data)).convert("RGB") for data in request.images]


def build_messages(request: VLRequest, images: list) -> list[dict]:
    if request.frame_times_s is not None:
        content = [{"type": "video"}]
    else:
        content = [{"type": "image", "image": image} for image in images]
    text = {"type": "text", "text": request.prompt}
    content = [text, *content] if request.prompt_first else [*content, text]
    return [{"role": "user", "content": content}]


# Frame times reach the processor as integer indices at this "frame rate", so the
# timestamps it writes into the prompt (index / fps) are the frames' true times.
TIMESTAMP_FPS = 1000.0


def video_metadata(frame_times_s: tuple[float, ...]):
    """Qwen3-VL video metadata whose timestamps are exactly `frame_times_s`."""
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(
        total_num_frames=len(frame_times_s),
        fps=TIMESTAMP_FPS,
        frames_indices=[round(t * TIMESTAMP_FPS) for t in frame_times_s],
    )


def processor_inputs(processor, batch: Sequence[VLRequest]) -> dict:
    """Chat-templated text plus images / videos (with exact timestamps) for a batch."""
    import numpy as np

    texts, images, videos, metadata = [], [], [], []
    for request in batch:
        decoded = decode_images(request)
        if request.frame_times_s is not None:
            frames, times = _same_size(decoded), list(request.frame_times_s)
            if len(frames) % 2:  # whole temporal patches: repeat the last frame, as Qwen does
                frames, times = [*frames, frames[-1]], [*times, times[-1]]
            videos.append(np.stack([np.asarray(im) for im in frames]))
            metadata.append(video_metadata(tuple(times)))
        else:
            images.extend(decoded)
        texts.append(
            processor.apply_chat_template(
                build_messages(request, decoded), tokenize=False, add_generation_prompt=True
            )
        )
    kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
    if images:
        kwargs["images"] = images
    if videos:
        kwargs.update(videos=videos, video_metadata=metadata, do_sample_frames=False)
        if hasattr(processor.video_processor, "cap_pixels_per_frame"):
            # the reference (qwen-vl-utils) per-frame cap; frames are already within
            # --max-pixels-per-frame, this only silences transformers' warning
            kwargs["cap_pixels_per_frame"] = True
    return processor(**kwargs)


def _same_size(images: list) -> list:
    size = images[0].size
    return [im if im.size == size else im.resize(size) for im in images]


def generate_batch(
    loaded: LoadedQwen, batch: Sequence[VLRequest], cfg: ModelConfig
) -> list[VLResult]:
    """One batched, left-padded, greedy `generate` over `batch` (the default inference_fn)."""
    import torch

    processor, model = loaded.processor, loaded.model
    inputs = processor_inputs(processor, batch).to(loaded.device)
    for name in ("pixel_values", "pixel_values_videos"):
        if name in inputs:
            inputs[name] = inputs[name].to(model.dtype)
    limits = [r.max_new_tokens or cfg.max_new_tokens for r in batch]
    sampling: dict[str, Any] = {"do_sample": cfg.do_sample}
    temperature = batch[0].temperature  # the engine batches one temperature at a time
    if temperature:  # a retry of a degenerate answer: sample
        sampling = {"do_sample": True, "temperature": temperature}
    prompt_len = inputs["input_ids"].shape[1]
    constraint = None
    if any(r.json_schema for r in batch) and guided_locally() == "llguidance":
        schemas = [r.json_schema for r in batch]  # None: that row is not constrained
        constraint = json_context(loaded).processor(schemas, prompt_len, limits)
        sampling["logits_processor"] = [constraint]
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max(limits), **sampling)
    latency = time.perf_counter() - started
    input_tokens = inputs["attention_mask"].sum(dim=1).tolist()
    results = []
    for i, limit in enumerate(limits):
        generated = output[i, prompt_len:].tolist()[:limit]
        stop_at = next((j for j, t in enumerate(generated) if t in loaded.stop_token_ids), None)
        kept = generated if stop_at is None else generated[:stop_at]
        if constraint is not None and batch[i].json_schema and not constraint.finished_ok(i):
            stop_at = None  # the grammar did not finish: cut off, whatever token came last
        results.append(
            VLResult(
                text=processor.tokenizer.decode(kept, skip_special_tokens=True),
                input_tokens=int(input_tokens[i]),
                output_tokens=len(generated) if stop_at is None else stop_at + 1,
                finish_reason="length" if stop_at is None else "stop",
                latency_s=latency,
            )
        )
    return results


InferenceFn = Callable[[Any, Sequence[VLRequest], ModelConfig], list[VLResult]]
Loader = Callable[[ModelConfig], Any]


class TransformersQwenHandler:
    """Qwen3-VL through local `transformers`: an `InferenceBackend` whose engine is a
    `BatchingEngine` running `generate` on batches of up to `max_batch_size` requests.

    The model is loaded in `create_engine`, which the inference stage calls once per worker
    process. `inference_fn` and `loader` are injectable, so tests exercise everything around
    the model without it, and the real path runs against the tiny checkpoint.
    """

    backend = BACKEND
    provider = None

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        inference_fn: InferenceFn = generate_batch,
        loader: Loader = load_qwen,
    ) -> None:
        self._cfg = cfg
        self._inference_fn = inference_fn
        self._loader = loader

    @property
    def model_name(self) -> str:
        return self._cfg.model

    @property
    def guided(self) -> str:
        """--extract: llguidance constrains decoding to the schema (when installed)."""
        return guided_locally()

    def load_model(self) -> Any:
        return self._loader(self._cfg)

    def create_engine(self) -> BatchingEngine:
        model, cfg, inference_fn = self.load_model(), self._cfg, self._inference_fn
        return BatchingEngine(
            lambda batch: inference_fn(model, batch, cfg),
            max_batch_size=cfg.max_batch_size,
            max_batch_pixels=cfg.max_batch_pixels,
            linger_s=cfg.max_batch_duration_secs,
            generate_timeout_s=cfg.generate_timeout_s,
        )
