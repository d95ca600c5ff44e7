"""`vlbeam run` flags as a Beam `PipelineOptions` subclass, so runner flags pass straight through.

Each flag is declared once, on the config dataclass it sets (`schemas/flags.py`); this module
adds them to the parser by section and builds the configs from the parsed options. Every flag
takes the dashed spelling users type (`--max-new-tokens`) and the underscored one Beam uses
when it re-creates options on workers.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging

from apache_beam.options.pipeline_options import PipelineOptions

from vlbeam.pipeline.job_config import JobConfig, parse_tasks
from vlbeam.pipeline.progress_display import RunControl
from vlbeam.schemas.config import ExtractConfig, LayoutConfig, ModelConfig, PagePolicy, RenderConfig
from vlbeam.schemas.flags import add_flags, flag_values, from_flags
from vlbeam.schemas.presets import ModelPreset, model_preset, preset_flag_defaults
from vlbeam.transforms.backends.openai_protocol import (
    ApiConfig,
    ApiRouting,
    api_config_from_preset,
)
from vlbeam.transforms.backends.server_spec import ServerSpec, size_model_len
from vlbeam.transforms.backends.tiny_model import resolve_model_path
from vlbeam.transforms.media.pdf_passwords import check_password_sources
from vlbeam.transforms.media.video_decode import SamplingConfig
from vlbeam.transforms.media.work_units import GroundingStrategy, VideoConfig

__all__ = [
    "VlbeamOptions",
    "apply_model_preset",
    "parse_tasks",
    "refuse_unknown_flags",
    "unknown_flags",
]

logger = logging.getLogger(__name__)

# `vlbeam run --help`, section by section: (title, the configs whose flags it lists)
SECTIONS = (
    ("job", (JobConfig,)),
    ("model", (ModelConfig,)),
    ("documents", (PagePolicy, LayoutConfig, RenderConfig)),
    ("video", (VideoConfig, SamplingConfig, GroundingStrategy)),
    ("managed inference servers (--backend vllm|sglang)", (ServerSpec,)),
    ("HTTP API backend (--backend openai)", (ApiConfig, ApiRouting)),
    ("budget and progress", (RunControl,)),
    ("extraction (--extract SCHEMA.json)", (ExtractConfig,)),
)

# the ApiConfig fields a managed server's requests take from the flags (the rest are a
# provider's: its URL, key, headers, prices)
_REQUEST_FIELDS = (
    "max_tokens", "temperature", "top_p", "seed", "stream", "max_concurrency", "timeout_s",
    "max_attempts",
)  # fmt: skip


class VlbeamOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        for title, configs in SECTIONS:
            group = parser.add_argument_group(title)
            for config in configs:
                add_flags(group, config)


def job_config(opts: VlbeamOptions) -> JobConfig:
    return from_flags(JobConfig, opts)


def run_control(opts: VlbeamOptions) -> RunControl:
    return from_flags(RunControl, opts)


_NOT_GIVEN = object()


def given_flags(argv: list[str], names) -> frozenset[str]:
    """Which of the flags `names` (underscored) `argv` gives explicitly, whatever the value
    (parsed by argparse with vlbeam's own declarations, every other flag ignored)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    VlbeamOptions._add_argparse_args(parser)
    parser.set_defaults(**{name: _NOT_GIVEN for name in names})
    parsed, _ = parser.parse_known_args(list(argv))
    return frozenset(name for name in names if getattr(parsed, name) is not _NOT_GIVEN)


def apply_model_preset(opts: VlbeamOptions, argv: list[str]) -> ModelPreset:
    """Set the flags `--model-preset` covers to the preset's values, except those `argv`
    gives explicitly (they win). A page size given by the long side drops the preset's short
    side (and the reverse), so the user's rule applies. Returns the preset."""
    preset = model_preset(opts.model_preset)
    defaults = preset_flag_defaults(preset)
    given = given_flags(argv, [*defaults, "target_long_side", "target_short_side"])
    if "target_long_side" in given and "target_short_side" not in given:
        defaults.pop("target_short_side", None)
    if "ocr_format" in given and opts.ocr_format != preset.ocr_format and preset.name != "qwen3-vl":
        raise ValueError(
            f"--model-preset {preset.name} answers {preset.ocr_format} in its own format; "
            f"--ocr-format {opts.ocr_format} would not change what it writes (leave it out)"
        )
    if preset.answer_format != "markdown" and getattr(opts, "figures", "none") != "none":
        raise ValueError(
            f"--figures crop reads QwenVL HTML boxes; --model-preset {preset.name}'s answers "
            "are not cropped yet (leave --figures out)"
        )
    for name, value in defaults.items():
        if name not in given:
            setattr(opts, name, value)
    if given or defaults:
        # the default preset's settings are today's behaviour: said only when debugging
        logger.log(
            logging.DEBUG if preset.name == "qwen3-vl" else logging.INFO,
            "--model-preset %s sets %s; given explicitly: %s",
            preset.name,
            ", ".join(f"--{n.replace('_', '-')}" for n in sorted(set(defaults) - given)) or "-",
            ", ".join(f"--{n.replace('_', '-')}" for n in sorted(given)) or "-",
        )
    return preset


def api_config(opts: VlbeamOptions) -> ApiConfig:
    values = flag_values(ApiConfig, opts)
    extra = json.loads(values.pop("extra_body", None) or "{}")
    if not isinstance(extra, dict):
        raise ValueError("--extra-body must be a JSON object")
    provider = values.pop("provider")
    extra = from_flags(ApiRouting, opts).apply(provider, extra)
    style, model = values.pop("style", None), values.pop("model", None)
    return api_config_from_preset(provider, style=style, model=model, extra_body=extra, **values)


def server_spec(opts: VlbeamOptions) -> ServerSpec:
    """The managed server of `--backend vllm|sglang`, with OCR-suited defaults."""
    frames = opts.max_frames_per_window if "grounding" in parse_tasks(opts.tasks) else 0
    max_len = opts.server_max_model_len or size_model_len(
        max_page_pixels=opts.max_page_pixels,
        max_new_tokens=opts.max_new_tokens,
        frames_per_window=frames,
        pixels_per_frame=opts.max_pixels_per_frame,
    )
    preset = model_preset(opts.model_preset)
    return from_flags(
        ServerSpec,
        opts,
        kind=opts.backend,
        model=resolve_model_path(opts.model),
        max_model_len=max_len,
        images_per_prompt=max(1, frames),
        # the preset's recommended server flags first: a --server-arg given later wins
        extra_args=(*preset.server_args, *(opts.server_arg or ())),
    )


def server_api_config(opts: VlbeamOptions) -> ApiConfig:
    """How the engine talks to a managed server (its URL is known only once it runs)."""
    return api_config_from_preset(
        "openai",
        base_url="http://127.0.0.1/v1",  # replaced by each server's own base URL
        model=opts.model,
        api_key_env="",
        **flag_values(ApiConfig, opts, only=_REQUEST_FIELDS),
    )


def video_config(opts: VlbeamOptions) -> VideoConfig:
    return from_flags(
        VideoConfig,
        opts,
        sampling=from_flags(SamplingConfig, opts),
        strategy=from_flags(GroundingStrategy, opts),
    )


def render_config(opts: VlbeamOptions) -> RenderConfig:
    # pages answered from the text layer get their blocks from its lines' boxes
    cfg = from_flags(RenderConfig, opts, text_boxes=opts.text_layer_policy == "prefer")
    for warning in check_password_sources(cfg):  # fails here on an unreadable passwords file
        logger.warning("%s", warning)
    return cfg


def model_config(opts: VlbeamOptions) -> ModelConfig:
    return from_flags(ModelConfig, opts)


def layout_config(opts: VlbeamOptions) -> LayoutConfig:
    return from_flags(LayoutConfig, opts)


def page_policy(opts: VlbeamOptions) -> PagePolicy:
    """Page handling from its flags, and how answers are read from `--model-preset`."""
    preset = model_preset(opts.model_preset)
    return from_flags(
        PagePolicy,
        opts,
        answer_format=preset.answer_format,
        bbox_grid=float(preset.bbox_grid),
        rotation_retry=preset.rotation_retry,
    )


def extract_config(opts: VlbeamOptions) -> ExtractConfig:
    return from_flags(ExtractConfig, opts)


# ---------------------------------------------------------------- unknown flags

_SWITCHES = ("store_true", "store_false", "store_const", "append_const", "count")


class _FlagScanner(argparse.ArgumentParser):
    """Every flag of every registered `PipelineOptions` subclass (vlbeam's own and Beam's:
    runners, filesystems, Dataflow, Flink, ...), for `parse_known_args` to tell known flags
    from unknown ones. Values are left unchecked (a bad value is for the real parse to
    report, with its flag's own message) and a flag may lack its value, so the scan never
    fails; switches take no value, so a token after one follows no flag."""

    def __init__(self) -> None:
        super().__init__(
            allow_abbrev=False, add_help=False, conflict_handler="resolve", exit_on_error=False
        )
        self.names: set[str] = set()
        self.switches: set[str] = set()
        seen: dict[str, type] = {}
        pending = list(PipelineOptions.__subclasses__())
        while pending:
            cls = pending.pop(0)
            if str(cls) not in seen:  # a class defined twice (main session) is added once
                seen[str(cls)] = cls
                cls._add_argparse_args(self)
            pending.extend(cls.__subclasses__())

    def add_argument(self, *names, **kwargs):
        for checked in ("type", "choices", "required"):
            kwargs.pop(checked, None)
        action = kwargs.get("action", "store")
        if not isinstance(action, str):  # an options class's own action checks values
            action = kwargs["action"] = "append" if "append" in action.__name__.lower() else "store"
        if action in _SWITCHES:
            self.switches.update(names)
        else:
            kwargs["nargs"] = "?" if kwargs.get("nargs") in (None, "?") else "*"
            kwargs.pop("const", None)
        self.names.update(names)
        return super().add_argument(*names, **kwargs)

    def add_argument_group(self, *args, **kwargs):
        if not hasattr(self, "names"):  # argparse's own groups, made in __init__
            return super().add_argument_group(*args, **kwargs)
        return self  # sections and exclusive groups don't matter to the scan

    add_mutually_exclusive_group = add_argument_group

    def scan(self, argv: list[str]) -> tuple[list[str], int]:
        """(unknown flag names in order, count of values that follow no flag). Values
        after an unknown flag count as its own. Only names are ever returned: a value may
        be a secret."""
        # a switch given a value (`--stream=x`) is the real parse's to refuse
        argv = [t.partition("=")[0] if t.partition("=")[0] in self.switches else t for t in argv]
        try:
            _, rest = self.parse_known_args(argv)
        except argparse.ArgumentError as exc:  # names only: the message may hold a value
            raise ValueError(f"cannot read the flag {exc.argument_name}") from None
        unknown: list[str] = []
        stray, position, owned = 0, -1, False
        for token in rest:
            if token == "--":  # everything after it is positional: vlbeam takes none
                stray += len(rest) - rest.index("--") - 1
                break
            at = argv.index(token, position + 1)
            if _looks_like_flag(token):
                name, has_value, _ = token.partition("=")
                if name not in unknown:
                    unknown.append(name)
                owned = not has_value
            else:
                owned = owned and at == position + 1  # the unknown flag's next value
                stray += not owned
            position = at
        return unknown, stray


def _looks_like_flag(token: str) -> bool:
    """Whether argparse would read `token` as an option (a negative number is a value)."""
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def unknown_flags(argv: list[str]) -> list[str]:
    """Names of the flags in `argv` that no registered PipelineOptions class knows (vlbeam's
    own flags in both spellings, and every Beam and runner flag, pass). Names only."""
    return _FlagScanner().scan(list(argv))[0]


def refuse_unknown_flags(argv: list[str]) -> None:
    """Raise ValueError naming every unknown flag, with the closest known one, before the job
    starts (Beam itself would only log a warning and run with defaults). Values are never
    echoed: a misspelled `--pdf-pasword=...` must not print the password."""
    scanner = _FlagScanner()
    unknown, stray = scanner.scan(list(argv))
    if not unknown and not stray:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(scanner.names), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"unknown flag {name}{hint}")
    if stray:
        problems.append(f"{stray} argument(s) that follow no flag (values are not shown)")
    raise ValueError(
        "; ".join(problems) + ". See `vlbeam run --help` for vlbeam's flags; Beam and runner "
        "flags (--runner, --project, --temp_location, ...) pass through as they are."
    )
