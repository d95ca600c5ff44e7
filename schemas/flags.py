"""Command-line flags declared on the config dataclasses they set (the pattern of vLLM's
`EngineArgs.add_cli_args` / `from_cli_args`).

A field made with `flag(...)` becomes the flag `--<name>` (also `--<name_with_underscores>`,
the spelling Beam uses when it re-creates options on workers); its type, action and default
come from the field unless the metadata says otherwise. `add_flags` adds a dataclass's flags
to an argparse parser; `flag_values` reads them back from the parsed options as the
dataclass's keyword arguments. argparse does the parsing: nothing here re-implements it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

_META = "vlbeam.flag"
_SAME = object()  # "the parser's default is the field's"
_TYPES = {"int": int, "float": float}


@dataclasses.dataclass(frozen=True)
class Flag:
    name: str | None = None  # the flag's name (underscored) where it differs from the field's
    help: str | None = None
    choices: tuple | None = None
    type: Callable | None = None  # default: int/float from the field's annotation
    action: str | None = None  # default: store_true for bool, append for tuple fields
    default: Any = _SAME  # the parser's default where it differs from the field's
    convert: Callable | None = None  # parsed value -> field value
    declared: bool = True  # False: the flag is declared on another field (same value)


def flag(
    default: Any = dataclasses.MISSING,
    *,
    help: str | None = None,
    choices=None,
    name: str | None = None,
    type: Callable | None = None,
    action: str | None = None,
    flag_default: Any = _SAME,
    convert: Callable | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that is also a `vlbeam run` flag. `flag_default`: the parser's
    default where it is not the field's (None: "not given", the builder decides)."""
    spec = Flag(name, help, tuple(choices) if choices is not None else None, type, action,
                flag_default, convert)  # fmt: skip
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={_META: spec}
    )


def same_flag(name: str, default: Any) -> Any:
    """A field set by a flag declared on another config (`--max-new-tokens` sets both the
    local model's and the API's answer length)."""
    return dataclasses.field(default=default, metadata={_META: Flag(name, declared=False)})


def flag_fields(cls) -> list[tuple[dataclasses.Field, Flag]]:
    return [(f, f.metadata[_META]) for f in dataclasses.fields(cls) if _META in f.metadata]


def flag_name(field: dataclasses.Field, spec: Flag) -> str:
    return spec.name or field.name


def _annotation(field: dataclasses.Field) -> str:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    parts = [p.strip() for p in str(kind).split("|")]
    return "|".join(p for p in parts if p != "None")


def _parser_default(field: dataclasses.Field, spec: Flag, action: str | None) -> Any:
    if spec.default is not _SAME:
        return spec.default
    if action == "append":
        return None  # argparse appends to a default: start from none
    if field.default is not dataclasses.MISSING:
        return field.default
    raise TypeError(f"flag for required field {field.name} needs a flag_default")


def add_flags(parser, cls) -> None:
    """Add every flag declared on the dataclass `cls` to `parser` (or an argument group),
    in field order, dashed and underscored spellings."""
    for field, spec in flag_fields(cls):
        if not spec.declared:
            continue
        name, kind = flag_name(field, spec), _annotation(field)
        action = spec.action or {"bool": "store_true"}.get(kind)
        if action is None and kind.startswith("tuple"):
            action = "append"
        kwargs: dict[str, Any] = {"default": _parser_default(field, spec, action)}
        if action:
            kwargs["action"] = action
        value_type = spec.type or (None if action else _TYPES.get(kind))
        if value_type is not None:
            kwargs["type"] = value_type
        if spec.choices is not None:
            kwargs["choices"] = list(spec.choices)
        if spec.help is not None:
            kwargs["help"] = spec.help
        dashed = f"--{name.replace('_', '-')}"
        names = [dashed] if dashed == f"--{name}" else [dashed, f"--{name}"]
        parser.add_argument(*names, dest=name, **kwargs)


def flag_values(cls, options, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The keyword arguments of `cls` its flags set in `options` (any object with the flags'
    names as attributes), of the fields in `only` if given. A flag left at None leaves the
    field to its default."""
    values = {}
    for field, spec in flag_fields(cls):
        if only is not None and field.name not in only:
            continue
        value = getattr(options, flag_name(field, spec))
        if value is not None and spec.convert is not None:
            value = spec.convert(value)
        if value is not None:
            values[field.name] = value
    return values


def from_flags(cls, options, **overrides):
    """`cls` built from its flags in `options`; `overrides` win (values no flag gives)."""
    return cls(**{**flag_values(cls, options), **overrides})


def none_if_empty(value: str) -> str | None:
    """convert= for a name or path where the empty string means "none"."""
    return value or None
