"""Model presets (`--model-preset NAME`): what one OCR fine-tune of the Qwen-VL family expects,
written down once from its publisher's own code or card, so that `vlbeam run --model-preset
olmocr-2 --model allenai/olmOCR-2-7B-1025-FP8` sends a page the way the model's own pipeline does
and reads its answer in the model's own format.

A preset sets the *defaults* of the flags it covers (`preset_flag_defaults`); a flag given on
the command line still wins (`pipeline/options.apply_model_preset`). What has no flag (message
order, answer format, the rotation retry) is read from the preset itself.

Sources (every fact carries its source; "secondary" marks what was not read upstream):

- olmOCR 2, `allenai/olmocr` @ f7cfe4c22098b154c76b6ec950d1c0a464eecf8d (v0.4.27; the same at tag
  v0.4.0 = a426f0c46210188d8df9660631e0dfc7c0d32094, the olmOCR 2 release):
  prompt `olmocr/prompts/prompts.py::build_no_anchoring_v4_yaml_prompt` (no anchor text; "LateX"
  is misspelled upstream and kept: the model was trained on it); request
  `olmocr/pipeline.py::build_page_query` (one user message, text part then image part, PNG
  data URI, max_tokens 8000 = MAX_TOKENS, temperature TEMPERATURE_BY_ATTEMPT[0] = 0.1);
  render `--target_longest_image_dim` 1288 (`olmocr/data/renderpdf.py`, longest side 1288 px,
  aspect kept); server `pipeline.py::vllm_server_task` (`--max-model-len 16384`,
  `--limit-mm-per-prompt '{"video": 0}'`); answer `olmocr/train/front_matter.py` +
  `PageResponse` in `prompts.py`; rotation `build_page_query` turns the image with PIL
  `transpose(ROTATE_<rotation_correction>)` (counter-clockwise) and tries again.
- Chandra 1, `datalab-to/chandra` @ a6928a27f1b8a9f5117eb75cf38abb45ed1b834d (chandra-ocr 0.1.9):
  prompt `chandra/prompts.py` `ocr_layout` with bbox_scale 1024; request `chandra/model/vllm.py`
  (image part then text, no system message, temperature 0, top_p 0.1, max_tokens
  MAX_OUTPUT_TOKENS 12384); render `chandra/input.py` (PDF at max(192 dpi, short side 1024 px))
  and `chandra/model/util.py::scale_to_fit` (at most 3072 x 2048 pixels); server
  `chandra/scripts/vllm.py` (`--max-model-len 32768 --max-num-seqs 32
  --max_num_batched_tokens 65536`).
- Chandra 2 (`datalab-to/chandra-ocr-2`, chandra-ocr 0.2.0): the upstream code was not
  reachable. SECONDARY: its prompt is taken from two third-party files that each say they
  copied `chandra/prompts.py` "ocr_layout" from github.com/datalab-to/chandra and agree byte for
  byte; request, sampling and render size are assumed unchanged from Chandra 1 (its release
  notes say the usage is the same); the score is from the v0.2.0 release notes as mirrored.
- Nanonets-OCR2-3B, its Hugging Face model card (a verbatim copy; SECONDARY as to the card
  itself) and `allenai/olmocr` @ f7cfe4c `olmocr/bench/runners/run_nanonetsocr_2.py`
  (verified): the prompt (identical in both), image part then text, temperature 0,
  max_tokens 15000 (the card's vLLM example), PDF rendered with its *shortest* side at
  1280 px (the olmOCR runner's `page_dimensions=1280`, which follows Nanonets' cookbook). The
  card's system message "You are a helpful assistant." is the Qwen2.5-VL chat template's
  own default, so no system message is sent (the template adds that one).
- Qwen3-VL: vlbeam's own default (`ocr_markdown_v1` = "qwenvl markdown", the Qwen3-VL
  document-parsing cookbook's prompt).

Scores: olmOCR-Bench overall, as published (who ran it is in `score_source`).
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("qwen3-vl", "qwen2.5-vl", "qwen3.5")
# How a preset's answers are read (transforms/answers/preset_answers.py):
#   markdown: as it is (vlbeam's default); olmocr-yaml: YAML front matter + markdown;
#   chandra-html: layout HTML (top-level div blocks with data-label / data-bbox);
#   nanonets-tags: markdown with <img>, <signature>, <watermark>, <page_number> tags.
ANSWER_FORMATS = ("markdown", "olmocr-yaml", "chandra-html", "nanonets-tags")
OCR_FORMATS = ("markdown", "html")
ROTATIONS = (0, 90, 180, 270)


@dataclass(frozen=True)
class ModelPreset:
    """One OCR model's published way of being asked. `None` in a setting: vlbeam's own default.

    - `prompt_id`: a built-in prompt (`pipeline/prompts/<prompt_id>.txt`);
      `prompt_first`: the text part comes before the image (olmOCR) instead of after.
    - render: `target_long_side` *or* `target_short_side` (pixels), `max_page_pixels` (cap).
    - sampling: `temperature`, `top_p`, `max_new_tokens`.
    - `ocr_format`: what the model writes (markdown or html, for `--ocr-format`);
      `answer_format`: how its answer is parsed (ANSWER_FORMATS); `bbox_grid`: the grid its
      layout boxes are written on (Chandra 1: 1024, Chandra 2: 1000).
    - `rotation_retry`: an answer saying the page is not upright (olmOCR's
      `is_rotation_valid: false`) re-sends the page turned by its `rotation_correction`, once.
    - managed servers: `server_max_model_len`, `server_args` (appended before `--server-arg`).
    - for the README: `model_id` (the publisher's checkpoint), `family` (base architecture),
      `license` (as stated by the publisher), `score` / `score_source` (olmOCR-Bench).
    """

    name: str
    model_id: str
    family: str
    prompt_id: str
    prompt_first: bool = False
    target_long_side: int | None = None
    target_short_side: int | None = None
    max_page_pixels: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    ocr_format: str = "markdown"
    answer_format: str = "markdown"
    bbox_grid: int = 1000
    rotation_retry: bool = False
    server_max_model_len: int | None = None
    server_args: tuple[str, ...] = ()
    outputs: str = ""
    license: str = ""
    score: str = ""
    score_source: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}")
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}")
        if self.ocr_format not in OCR_FORMATS:
            raise ValueError(f"ocr_format must be one of {OCR_FORMATS}")
        if self.target_long_side is not None and self.target_short_side is not None:
            raise ValueError("a preset sizes pages by the long side or the short side, not both")
        if self.bbox_grid <= 0:
            raise ValueError("bbox_grid must be positive")


# olmOCR 2's rotation retry (pipeline.py::process_page): attempt 1's temperature is
# TEMPERATURE_BY_ATTEMPT[1] = 0.1, the same as attempt 0's.
OLMOCR_TEMPERATURE_BY_ATTEMPT = (0.1, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0)

PRESETS: dict[str, ModelPreset] = {
    "qwen3-vl": ModelPreset(
        name="qwen3-vl",
        model_id="Qwen/Qwen3-VL-8B-Instruct",
        family="qwen3-vl",
        prompt_id="ocr_markdown_v1",
        outputs="markdown",
        license="Apache-2.0 (third-party listing; the card was not read)",
        score="64.6 ± 1.1 (Qwen3-VL-8B)",
        score_source="datalab-to/chandra README (Oct 2025, 'Own benchmarks': run by Datalab, "
        "prompt unknown)",
    ),
    "olmocr-2": ModelPreset(
        name="olmocr-2",
        model_id="allenai/olmOCR-2-7B-1025-FP8",
        family="qwen2.5-vl",
        prompt_id="olmocr2_v4_yaml_v1",
        prompt_first=True,
        target_long_side=1288,
        temperature=OLMOCR_TEMPERATURE_BY_ATTEMPT[0],
        max_new_tokens=8000,
        answer_format="olmocr-yaml",
        rotation_retry=True,
        server_max_model_len=16384,
        outputs="markdown + YAML front matter (language, rotation, table/diagram flags)",
        license="Apache-2.0, 'intended for research and educational use' (model cards of the "
        "olmOCR family; code: Apache-2.0)",
        score="82.4 ± 1.1",
        score_source="allenai/olmocr README @ f7cfe4c (run by AI2)",
    ),
    "chandra": ModelPreset(
        name="chandra",
        model_id="datalab-to/chandra-ocr-2",
        family="qwen3.5",
        prompt_id="chandra2_ocr_layout_v1",  # SECONDARY: a verbatim third-party copy
        target_short_side=1632,  # 192 dpi on US Letter (Chandra renders PDFs at 192 dpi)
        max_page_pixels=3072 * 2048,
        temperature=0.0,
        top_p=0.1,
        max_new_tokens=12384,
        ocr_format="html",
        answer_format="chandra-html",
        bbox_grid=1000,
        server_max_model_len=32768,
        server_args=("--max-num-seqs", "96", "--max-num-batched-tokens", "65536"),
        outputs="layout HTML (div blocks with data-label, data-bbox 0-1000)",
        license="modified OpenRAIL-M (card: `license: openrail`; secondary), code Apache-2.0",
        score="85.9",
        score_source="chandra v0.2.0 release notes and HF card, as mirrored (secondary)",
    ),
    "chandra-1": ModelPreset(
        name="chandra-1",
        model_id="datalab-to/chandra",
        family="qwen3-vl",
        prompt_id="chandra1_ocr_layout_v1",
        target_short_side=1632,
        max_page_pixels=3072 * 2048,
        temperature=0.0,
        top_p=0.1,
        max_new_tokens=12384,
        ocr_format="html",
        answer_format="chandra-html",
        bbox_grid=1024,
        server_max_model_len=32768,
        server_args=("--max-num-seqs", "32", "--max-num-batched-tokens", "65536"),
        outputs="layout HTML (div blocks with data-label, data-bbox 0-1024)",
        license="modified OpenRAIL-M weights (free for research, personal use and startups "
        "under $2M; not competitively with Datalab's API), code Apache-2.0",
        score="83.1 ± 0.9",
        score_source="datalab-to/chandra README before 8cb96bf (self-reported)",
    ),
    "nanonets-ocr2": ModelPreset(
        name="nanonets-ocr2",
        model_id="nanonets/Nanonets-OCR2-3B",
        family="qwen2.5-vl",
        prompt_id="nanonets_ocr2_v1",
        target_short_side=1280,
        temperature=0.0,
        max_new_tokens=15000,
        answer_format="nanonets-tags",
        server_max_model_len=32768,
        outputs="markdown with <img>, <signature>, <watermark>, <page_number> tags, HTML tables",
        license="none stated in the card's metadata (base Qwen2.5-VL-3B-Instruct: check its "
        "licence before commercial use)",
        score="69.5 ± 1.1",
        score_source="allenai/olmocr README @ f7cfe4c (run by AI2)",
    ),
}
DEFAULT_PRESET = "qwen3-vl"


def model_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"--model-preset must be one of {sorted(PRESETS)}, got {name!r}") from None


def preset_flag_defaults(preset: ModelPreset) -> dict[str, object]:
    """The flags (by their underscored names) whose defaults `preset` sets: only the settings
    it has (None leaves vlbeam's own default). `--server-arg` is not here: the preset's server
    arguments come before the user's (`server_args`), so the user's win."""
    values = {
        "target_long_side": preset.target_long_side,
        "target_short_side": preset.target_short_side,
        "max_page_pixels": preset.max_page_pixels,
        "temperature": preset.temperature,
        "top_p": preset.top_p,
        "max_new_tokens": preset.max_new_tokens,
        "server_max_model_len": preset.server_max_model_len,
        "ocr_format": preset.ocr_format,
    }
    return {name: value for name, value in values.items() if value is not None}
