"""How many input tokens Qwen3-VL's processor makes of a request: the image-size rules of its
image and video processors, the chat template's fixed text and the prompt.

One function sizes an image for both sides of the budget: `vlbeam plan` (which never renders a
page nor decodes a frame: it knows the rendered page size and the frame size from the file's
headers) and the run's own accounting (`TokenCounter.request_tokens`, reading the sizes from
the image headers of the request actually sent; the spend of a call whose server reports no
usage). The rules are transformers' (`Qwen2VLImageProcessor` and `Qwen3VLVideoProcessor`, the
`smart_resize` of each, copied because transformers keeps them private and importing it costs
seconds; `tests/backends/test_vision_tokens.py` checks them against the real processor):

- an image: resized to multiples of 32 px (patch 16, merge 2) within the processor's
  `shortest_edge`..`longest_edge` pixels, one token per 32 x 32 px, between
  `<|vision_start|>` and `<|vision_end|>`;
- a video window: frames (an even number: the last is repeated, temporal patch 2) resized
  together under the per-frame cap the run passes (`cap_pixels_per_frame`), one group per
  temporal patch: `<t seconds>` text, `<|vision_start|>`, its tokens, `<|vision_end|>`.

Pure (no transformers, no torch): the tokenizer is `tokenizers` on the model's
`tokenizer.json` and the chat template is rendered with Jinja2, as transformers renders it.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from vlbeam.transforms.backends.tiny_model import CHAT_TEMPLATE

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"


@dataclass(frozen=True)
class VisionSpec:
    """The processor settings that decide token counts (Qwen3-VL's published defaults)."""

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_min_pixels: int = 65_536
    image_max_pixels: int = 16_777_216
    video_min_pixels: int = 4_096
    video_max_pixels: int = 25_165_824
    max_video_tokens: int = 768
    cap_pixels_per_frame: bool = True  # what the run passes (qwen_transformers)

    def __post_init__(self) -> None:
        if min(self.patch_size, self.merge_size, self.temporal_patch_size) < 1:
            raise ValueError("patch, merge and temporal patch sizes must be >= 1")

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_folder(cls, folder: str | None) -> VisionSpec:
        """The spec of a model folder's `processor_config.json` (or the older
        `preprocessor_config.json` / `video_preprocessor_config.json`); defaults elsewhere."""
        if not folder:
            return cls()
        image, video = _read_json(folder, "processor_config.json"), None
        if image:
            image, video = image.get("image_processor") or {}, image.get("video_processor") or {}
        else:
            image = _read_json(folder, "preprocessor_config.json") or {}
        video = video or _read_json(folder, "video_preprocessor_config.json") or {}
        base = cls()
        i_size, v_size = image.get("size") or {}, video.get("size") or {}
        return cls(
            patch_size=image.get("patch_size", base.patch_size),
            merge_size=image.get("merge_size", base.merge_size),
            temporal_patch_size=video.get("temporal_patch_size", base.temporal_patch_size),
            image_min_pixels=i_size.get("shortest_edge", base.image_min_pixels),
            image_max_pixels=i_size.get("longest_edge", base.image_max_pixels),
            video_min_pixels=v_size.get("shortest_edge", base.video_min_pixels),
            video_max_pixels=v_size.get("longest_edge", base.video_max_pixels),
            max_video_tokens=video.get("max_video_tokens", base.max_video_tokens),
        )


def _read_json(folder: str, name: str) -> dict | None:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def image_resize(height: int, width: int, spec: VisionSpec) -> tuple[int, int]:
    """(height, width) the image processor resizes an image to (transformers'
    `qwen2_vl.image_processing_qwen2_vl.smart_resize`)."""
    factor, lo, hi = spec.factor, spec.image_min_pixels, spec.image_max_pixels
    if max(height, width) / min(height, width) > 200:
        raise ValueError("absolute aspect ratio must be smaller than 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > hi:
        beta = math.sqrt((height * width) / hi)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < lo:
        beta = math.sqrt(lo / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(width: int, height: int, spec: VisionSpec) -> int:
    """Visual tokens of one image of `width` x `height` px (pads only)."""
    h, w = image_resize(height, width, spec)
    return (h // spec.factor) * (w // spec.factor)


def video_frames_sent(num_frames: int, spec: VisionSpec) -> int:
    """Frames the processor sees: an odd count gets its last frame repeated (whole temporal
    patches), as the run does before calling it."""
    return num_frames + (-num_frames % spec.temporal_patch_size)


def video_resize(num_frames: int, height: int, width: int, spec: VisionSpec) -> tuple[int, int]:
    """(height, width) the video processor resizes every frame of a window to (transformers'
    `qwen3_vl.video_processing_qwen3_vl.smart_resize` under the per-frame cap)."""
    factor, temporal = spec.factor, spec.temporal_patch_size
    lo, hi = spec.video_min_pixels, spec.video_max_pixels
    if spec.cap_pixels_per_frame:
        frame_cap = spec.max_video_tokens * factor * factor
        hi = max(min(frame_cap, hi // num_frames), int(lo * 1.05)) * num_frames
    if num_frames < temporal:
        raise ValueError(f"t:{num_frames} must be larger than temporal_factor:{temporal}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise ValueError("absolute aspect ratio must be smaller than 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / temporal) * temporal
    if t_bar * h_bar * w_bar > hi:
        beta = math.sqrt((num_frames * height * width) / hi)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < lo:
        beta = math.sqrt(lo / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_patch_tokens(num_frames: int, width: int, height: int, spec: VisionSpec) -> list[int]:
    """Visual tokens of each temporal patch of a window of `num_frames` frames of
    `width` x `height` px (pads only; one entry per `<t seconds>` group)."""
    frames = video_frames_sent(num_frames, spec)
    h, w = video_resize(frames, height, width, spec)
    per_patch = (h // spec.factor) * (w // spec.factor)
    return [per_patch] * (frames // spec.temporal_patch_size)


def patch_times(frame_times_s: tuple[float, ...] | list[float], spec: VisionSpec) -> list[float]:
    """The time the processor writes for each temporal patch: the mean of its first and last
    frame (the last frame repeated for an odd count)."""
    times = list(frame_times_s)
    times += [times[-1]] * (-len(times) % spec.temporal_patch_size)
    size = spec.temporal_patch_size
    return [(times[i] + times[i + size - 1]) / 2 for i in range(0, len(times), size)]


def image_header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an encoded image's header (nothing decoded)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


class TokenCounter:
    """Input tokens of Qwen3-VL requests: the tokenizer and chat template of a model folder
    (the tiny model's, the real Qwen3-VL tokenizer, when the model is not on this machine),
    plus the image-size rules above. Picklable (it loads the tokenizer lazily)."""

    def __init__(self, folder: str | None, spec: VisionSpec | None = None) -> None:
        self.folder = folder
        self.spec = spec or VisionSpec.from_folder(folder)

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "spec": self.spec}

    def __setstate__(self, state: dict) -> None:
        self.folder, self.spec = state["folder"], state["spec"]

    @cached_property
    def _tokenizer(self):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError(
                "counting prompt tokens needs the model's tokenizer: install vlbeam[transformers]"
            ) from None

        if not self.folder or not os.path.isfile(os.path.join(self.folder, "tokenizer.json")):
            raise FileNotFoundError(f"no tokenizer.json in {self.folder!r}")
        return Tokenizer.from_file(os.path.join(self.folder, "tokenizer.json"))

    @cached_property
    def _template(self):
        try:
            import jinja2
            import jinja2.ext
            import jinja2.sandbox
        except ImportError:
            raise ImportError(
                "rendering the chat template needs Jinja2: install vlbeam[transformers]"
            ) from None

        text = None
        if self.folder and os.path.isfile(os.path.join(self.folder, "chat_template.jinja")):
            with open(os.path.join(self.folder, "chat_template.jinja"), encoding="utf-8") as f:
                text = f.read()
        elif self.folder:
            text = (_read_json(self.folder, "tokenizer_config.json") or {}).get("chat_template")
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        return env.from_string(text if isinstance(text, str) else CHAT_TEMPLATE)

    def text_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (one counter per run: bounded)
    def _piece_tokens(self, text: str) -> int:
        return self.text_tokens(text)

    def _chat(self, parts: list[dict[str, Any]]) -> str:
        messages = [{"role": "user", "content": parts}]
        return self._template.render(messages=messages, add_generation_prompt=True)

    def page_tokens(self, sizes: list[tuple[int, int]], prompt: str) -> int:
        """Input tokens of a request with one image per (width, height) and `prompt`."""
        images = [{"type": "image"} for _ in sizes]
        text = self._chat([*images, {"type": "text", "text": prompt}])
        pads = sum(image_tokens(w, h, self.spec) for w, h in sizes)
        return self._piece_tokens(text) - len(sizes) + pads

    def window_tokens(
        self, frame_times_s: tuple[float, ...] | list[float], width: int, height: int, prompt: str
    ) -> int:
        """Input tokens of a video window: frames of `width` x `height` px at these times.
        The template's text is tokenized apart from each `<t seconds>` group: the special
        tokens around a group split the text there, so the counts add up exactly."""
        text = self._chat([{"type": "video"}, {"type": "text", "text": prompt}])
        total = self._piece_tokens(text.replace(VIDEO_PAD, "", 1))
        for t in patch_times(frame_times_s, self.spec):
            total += self._piece_tokens(f"<{t:.1f} seconds>") + 2  # + vision start and end
        return total + sum(video_patch_tokens(len(frame_times_s), width, height, self.spec))

    def request_tokens(self, request) -> int:
        """Input tokens of a `VLRequest` as sent (image sizes from the image headers)."""
        if not request.images:
            return self.text_tokens(self._chat([{"type": "text", "text": request.prompt}]))
        sizes = [image_header_size(data) for data in request.images]
        if request.frame_times_s is not None:
            width, height = sizes[0]
            return self.window_tokens(request.frame_times_s, width, height, request.prompt)
        return self.page_tokens(sizes, request.prompt)


def tokenizer_folder(model: str) -> str | None:
    """A folder with the tokenizer and processor config of `model`: itself, its Hugging Face
    cache snapshot, or (when neither is on this machine: an API model name) the tiny model's,
    which has the real Qwen3-VL tokenizer and processor settings. Builds the tiny model once
    (about 15 s) when needed."""
    from vlbeam.transforms.backends.tiny_model import TINY_RANDOM, resolve_model_path

    if model != TINY_RANDOM:
        path = os.path.expanduser(model)
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            return path
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "tokenizer.json")
        except Exception:
            found = None
        if isinstance(found, str):
            return os.path.dirname(found)
    return resolve_model_path(TINY_RANDOM)
