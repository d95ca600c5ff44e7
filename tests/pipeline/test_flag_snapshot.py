"""`vlbeam run`'s flags, as users see them, stay what they were before the flags were declared
on the config dataclasses: every option's spellings, destination, default, choices, help, nargs,
type and action, the `--help` text, and the configs the launcher builds from a few command
lines (or the error it raises).

`tests/fixtures/run_flags.json` was written once from the code before that change
(`./py -m tests.pipeline.test_flag_snapshot --write`); a difference here is a user-visible change.
It was rewritten when flags were added (coarse-to-fine grounding: --grounding-strategy,
--coarse-window-seconds, --coarse-fps, --refine-margin-s, --coarse-prompt-file), checked to
differ from the one before only by those flags and the configs they set.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from vlbeam.transforms.backends.managed_server import ProcessTunables

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_flags.json"

# command lines whose configs are recorded (values only from this file: nothing secret)
ARGVS = {
    "defaults": [],
    "all_set": [
        "--input=a/*.pdf",
        "--input",
        "b/*.mp4",
        "--output=out",
        "--output-mode=append",
        "--skip-existing",
        "--tasks=ocr,grounding",
        "--run-id=nightly-1",
        "--model=org/m",
        "--device=cpu",
        "--dtype=bfloat16",
        "--max-new-tokens=77",
        "--max-batch-size=3",
        "--max-batch-pixels=1000000",
        "--max-batch-duration-secs=1.5",
        "--attn-implementation=sdpa",
        "--text-layer-policy=compare",
        "--retry-degenerate=2",
        "--pdf-renderer=pdf2image",
        "--pdf-password=pw",
        "--pdf-password-env=PDF_PW",
        "--target-long-side=640",
        "--max-page-pixels=900000",
        "--render-timeout-s=9.5",
        "--render-memory-mb=1024",
        "--page-image-format=webp",
        "--pages-per-task=3",
        "--query=a dog",
        "--query",
        "a cat",
        "--window-seconds=30",
        "--window-overlap-seconds=2",
        "--fps=1.5",
        "--max-frames-per-window=16",
        "--max-pixels-per-frame=50000",
        "--sampling=keyframes",
        "--grounding-strategy=coarse-to-fine",
        "--coarse-window-seconds=120",
        "--coarse-fps=0.5",
        "--refine-margin-s=8",
        "--coarse-prompt-file=coarse.txt",
        "--decode-timeout-s=12",
        "--backend=vllm",
        "--server-python=/opt/py",
        "--server-arg=--enforce-eager",
        "--server-arg=--foo=1",
        "--tensor-parallel-size=2",
        "--server-start-timeout-s=60",
        "--max-server-restarts=1",
        "--gpu-memory-utilization=0.5",
        "--provider=openrouter",
        "--api-style=completions",
        "--base-url=http://h:1/v1",
        "--api-model=q",
        "--api-key-env=MY_KEY",
        '--extra-body={"usage": {"include": true}}',
        "--api-header",
        "X-Title=vlbeam",
        "--api-header=HTTP-Referer=https://x",
        "--provider-order=a, b",
        "--reasoning-effort=high",
        "--temperature=0.3",
        "--top-p=0.9",
        "--seed=5",
        "--stream",
        "--max-concurrency=4",
        "--requests-per-minute=60",
        "--request-timeout-s=30",
        "--max-attempts=2",
        "--price-input-per-mtok=0.1",
        "--price-output-per-mtok=0.4",
        "--no-preflight",
    ],
    "underscored": [
        "--max_new_tokens=5",
        "--pdf_renderer",
        "pdf2image",
        "--window_seconds=20",
        "--server_max_model_len=4096",
        "--backend=sglang",
        "--server_command",
        "{python} -m srv --model {model} --host {host} --port {port}",
        "--base_url=http://x/v1",
        "--pdf_password_env=",
        "--max_pixels_per_frame=40000",
    ],
    "grounding_server": ["--backend=vllm", "--tasks=grounding", "--max-frames-per-window=32"],
    "vercel": ["--provider=vercel", "--provider-order=alibaba,deepinfra", "--top_p=0.5"],
    "dashscope_video": ["--provider=dashscope", "--native-video", "--api-key-env="],
    "bad_header": ["--base-url=http://h/v1", "--api-header=novalue"],
    "auth_header": ["--base-url=http://h/v1", "--api-header=Authorization=Bearer x"],
    "bad_body": ["--base-url=http://h/v1", "--extra-body=[1]"],
    "undocumented_body": ["--provider=vercel", '--extra-body={"nope": 1}'],
    "no_video": ["--provider=openrouter", "--native-video"],
    "bad_policy": ["--retry-degenerate=9"],
    "bad_margin": [
        "--grounding-strategy=coarse-to-fine",
        "--coarse-fps=0.5",
        "--refine-margin-s=1",
    ],
}


def _jsonable(value):
    return json.loads(json.dumps(value, default=repr))


def _action(action: argparse.Action) -> dict:
    kind = getattr(action.type, "__name__", None)
    return _jsonable(
        {
            "option_strings": action.option_strings,
            "dest": action.dest,
            "default": action.default,
            "choices": list(action.choices) if action.choices is not None else None,
            "help": action.help,
            "nargs": action.nargs,
            "const": action.const,
            "type": kind.lstrip("_") if kind else None,
            "action": type(action).__name__,
            "required": action.required,
            "metavar": action.metavar,
        }
    )


def _configs(argv: list[str]) -> dict:
    from vlbeam.pipeline import options as o

    opts = PipelineOptions(argv).view_as(o.VlbeamOptions)
    out = {"options": _jsonable(opts.get_all_options(drop_default=True))}
    builders = {
        "render": o.render_config,
        "model": o.model_config,
        "video": o.video_config,
        "page_policy": o.page_policy,
        "api": o.api_config,
        "server": o.server_spec,
        "server_api": o.server_api_config,
        "tasks": lambda opts: sorted(o.parse_tasks(opts.tasks)),
    }
    for name, build in builders.items():
        try:
            built = build(opts)
            out[name] = _jsonable(
                dataclasses.asdict(built) if dataclasses.is_dataclass(built) else built
            )
        except ValueError as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def snapshot() -> dict:
    from vlbeam.pipeline.options import VlbeamOptions

    parser = argparse.ArgumentParser(prog="vlbeam run")
    VlbeamOptions._add_argparse_args(parser)
    actions = [_action(a) for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    with _columns(100):
        text = parser.format_help()
    return {
        "actions": actions,
        "help": text,
        "configs": {name: _configs(argv) for name, argv in ARGVS.items()},
    }


@contextlib.contextmanager
def _columns(n: int):
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _by_name(actions: list[dict]) -> dict[str, dict]:
    return {a["option_strings"][0]: a for a in actions}


def test_every_flag_is_as_before():
    """Same flags, spellings, destinations, defaults, choices, help, nargs, types, actions.
    (`--help` now lists them in sections, one per config: their order is no longer one
    hand-written sequence.)"""
    before = _by_name(json.loads(FIXTURE.read_text())["actions"])
    now = _by_name(snapshot()["actions"])
    assert sorted(now) == sorted(before)
    for name, old in before.items():
        assert now[name] == old, name


def _help_entries(text: str) -> list[str]:
    """The help text's entry for each flag: its line(s) from `  --flag ...` to the next."""
    entries, current = [], None
    for line in text.splitlines():
        if line.startswith("  -"):
            current = [line]
            entries.append(current)
        elif current is not None and line.startswith("   "):
            current.append(line)
        else:
            current = None
    return ["\n".join(e) for e in entries]


def test_the_help_text_says_what_it_said():
    before = json.loads(FIXTURE.read_text())["help"]
    now = snapshot()["help"]
    old_entries, new_entries = _help_entries(before), _help_entries(now)
    # -h and 94 flags (--max-failed-fraction #20; --model-preset, --target-short-side #25)
    assert len(old_entries) == 95
    assert sorted(new_entries) == sorted(old_entries)
    for title in ("job:", "model:", "documents:", "video:", "HTTP API backend (--backend openai):",
                  "budget and progress:"):  # fmt: skip
        assert f"\n{title}\n" in now


def test_the_configs_built_from_flags_are_as_before():
    before = json.loads(FIXTURE.read_text())["configs"]
    now = snapshot()["configs"]
    assert list(now) == list(before)
    # how a managed server process is run and watched moved out of ServerSpec into
    # ProcessTunables, which no flag sets: those fields are compared there
    tunables = {f.name for f in dataclasses.fields(ProcessTunables)}
    for name in before:
        server = before[name].get("server")
        if isinstance(server, dict):
            moved = {k: server.pop(k) for k in tunables & set(server)}
            assert moved == {k: getattr(ProcessTunables(), k) for k in moved}, name
        assert now[name] == before[name], name


def test_the_cli_prints_the_help(capsys):
    from vlbeam.pipeline import cli

    with _columns(100):
        assert cli.main(["run", "--help"]) == 0
    assert capsys.readouterr().out == snapshot()["help"]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    FIXTURE.parent.mkdir(exist_ok=True)
    with contextlib.redirect_stderr(io.StringIO()):  # builders log password warnings
        data = snapshot()
    FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"wrote {FIXTURE}: {len(data['actions'])} flags")
