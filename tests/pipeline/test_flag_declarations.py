"""Flags declared on config fields (`schemas/flags.py`): one declaration gives the flag, its
parser default and the config's value; a flag another config declares is not added twice."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from vlbeam.pipeline.job_config import JobConfig
from vlbeam.pipeline.options import VlbeamOptions, job_config, unknown_flags
from vlbeam.schemas.flags import add_flags, flag, flag_values, from_flags, same_flag


@dataclass(frozen=True)
class Demo:
    size: int = flag(3, help="how big")
    ratio: float | None = flag(None, name="demo_ratio")
    on: bool = flag(False)
    tags: tuple[str, ...] = flag((), convert=tuple)
    limit: int = flag(8, flag_default=None)  # None: the field's default
    tokens: int = same_flag("size", 0)  # set by --size, not a flag of its own
    hidden: int = 1


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_flags(parser, Demo)
    return parser, parser.parse_args(list(argv))


def test_one_declaration_gives_the_flag_and_the_config():
    parser, opts = parse("--demo-ratio=0.5", "--on", "--tags", "a", "--tags=b", "--size=7")
    assert from_flags(Demo, opts) == Demo(
        size=7, ratio=0.5, on=True, tags=("a", "b"), limit=8, tokens=7
    )
    assert from_flags(Demo, parse()[1]) == Demo(tokens=3)
    help_text = parser.format_help()
    assert "--size SIZE" in help_text and "how big" in help_text
    assert "--tokens" not in help_text and "--hidden" not in help_text
    assert "--demo_ratio" in help_text and "--demo-ratio" in help_text
    with pytest.raises(SystemExit):
        parse("--size=big")  # int from the field's annotation


def test_values_of_some_fields_and_overrides():
    _, opts = parse("--size=2")
    assert flag_values(Demo, opts, only=("size", "on")) == {"size": 2, "on": False}
    assert from_flags(Demo, opts, limit=1).limit == 1


def test_a_required_field_needs_a_flag_default():
    @dataclass(frozen=True)
    class Required:
        name: str = flag()

    with pytest.raises(TypeError, match="needs a flag_default"):
        add_flags(argparse.ArgumentParser(), Required)


def test_the_job_config_from_flags():
    opts = PipelineOptions(
        ["--input=a", "--input", "b", "--output=o", "--query=q", "--backend=openai"]
    ).view_as(VlbeamOptions)
    job = job_config(opts)
    assert (job.input, job.output, job.query, job.backend) == (("a", "b"), "o", ("q",), "openai")
    assert job.task_set == {"ocr", "grounding"}
    with pytest.raises(ValueError, match="--tasks"):
        JobConfig(tasks="nope")


def test_the_scan_reads_tokens_as_argparse_does():
    # a known flag may lack its value; a value with spaces is a value; `=` on a switch is the
    # real parse's to refuse, not an unknown flag
    assert unknown_flags(["--output", "--stream", "--fps"]) == []
    assert unknown_flags(["--query", "-a dog", "--stream=1"]) == []
    # a value after a switch that follows an unknown flag is not the unknown flag's
    assert unknown_flags(["--nope", "--stream", "v"]) == ["--nope"]
    with pytest.raises(ValueError, match=r"^unknown flag --nope; 1 argument\(s\) that follow"):
        from vlbeam.pipeline.options import refuse_unknown_flags

        refuse_unknown_flags(["--nope", "--stream", "v"])
