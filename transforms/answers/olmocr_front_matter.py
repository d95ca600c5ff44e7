"""olmOCR 2's answers: a YAML front matter (page metadata) followed by the page's markdown.

Format and rules, from `allenai/olmocr` @ f7cfe4c22098b154c76b6ec950d1c0a464eecf8d:
`olmocr/train/front_matter.py::FrontMatterParser` with `front_matter_class=PageResponse`
(`olmocr/prompts/prompts.py`), the training target `dataloader.py::FrontMatterOutputFormat`:

    ---
    primary_language: en
    is_rotation_valid: True
    rotation_correction: 0
    is_table: True
    is_diagram: False
    ---
    Edgar (or Eadgar; c. 944 - 8 July 975) was King of the English ...

- The answer must start with "---\\n"; the front matter runs to the next "\\n---"; it is read
  with `yaml.safe_load` (PyYAML, never by hand); the text after it, stripped, is the page's
  text. No front matter: olmOCR fails the page (every field but the text is required).
- Fields: all five required, no others. str → int for `rotation_correction` (which must be
  0, 90, 180 or 270); str → bool by `.lower() == "true"`; `primary_language` a YAML boolean
  (`no`, Norwegian, read by YAML as False) becomes None, as olmOCR's coercion does.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

FIELDS = ("primary_language", "is_rotation_valid", "rotation_correction", "is_table", "is_diagram")
ROTATIONS = (0, 90, 180, 270)


class FrontMatterError(ValueError):
    """The answer is not olmOCR's front matter + text."""


@dataclass(frozen=True)
class PageResponse:
    """olmOCR's `PageResponse` (its `natural_text` is `text` here)."""

    primary_language: str | None
    is_rotation_valid: bool
    rotation_correction: int
    is_table: bool
    is_diagram: bool
    text: str

    def meta(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS}


def _bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    raise FrontMatterError(f"{name} must be a boolean, got {value!r}")


def _int(name: str, value) -> int:
    if isinstance(value, bool):
        raise FrontMatterError(f"{name} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FrontMatterError(f"{name} must be an integer, got {value!r}") from None


def _language(value) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return str(value)


def parse_olmocr(answer: str) -> PageResponse:
    """olmOCR's front matter and text, or FrontMatterError saying what is wrong."""
    if not answer.startswith("---\n"):
        raise FrontMatterError("the answer does not start with a '---' front matter")
    end = answer.find("\n---", 4)
    if end < 0:
        raise FrontMatterError("the front matter is not closed by '---'")
    try:
        fields = yaml.safe_load(answer[4:end])
    except yaml.YAMLError as exc:
        raise FrontMatterError(f"the front matter is not YAML: {exc}") from None
    if not isinstance(fields, dict):
        raise FrontMatterError("the front matter is not a mapping")
    missing = [name for name in FIELDS if name not in fields]
    extra = sorted(str(k) for k in fields if k not in FIELDS)
    if missing or extra:
        raise FrontMatterError(f"front matter fields missing {missing}, unexpected {extra}")
    rotation = _int("rotation_correction", fields["rotation_correction"])
    if rotation not in ROTATIONS:
        raise FrontMatterError(f"rotation_correction must be one of {ROTATIONS}, got {rotation}")
    return PageResponse(
        primary_language=_language(fields["primary_language"]),
        is_rotation_valid=_bool("is_rotation_valid", fields["is_rotation_valid"]),
        rotation_correction=rotation,
        is_table=_bool("is_table", fields["is_table"]),
        is_diagram=_bool("is_diagram", fields["is_diagram"]),
        text=answer[end + 4 :].strip(),
    )
