"""The built wheel, not the editable checkout, holds everything a worker needs: every
subpackage of every layer, the packaged prompts, and a helper process that starts from it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.pipeline_helpers import build_wheel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(out)
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_wheel_has_every_package_and_the_prompts(unpacked_wheel):
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    for package in packages:
        folder = unpacked_wheel.joinpath(*package.split("."))
        assert (folder / "__init__.py").is_file(), package
    # every module of the checkout is in the wheel
    for top in ("pipeline", "transforms", "schemas", "runners", "outputs"):
        for path in (REPO / top).rglob("*.py"):
            assert (unpacked_wheel / "vlbeam" / path.relative_to(REPO)).is_file(), path
    # the package's top is api/__init__.py, with its py.typed marker
    for name in ("__init__.py", "py.typed"):
        assert (unpacked_wheel / "vlbeam" / name).read_bytes() == (REPO / "api" / name).read_bytes()
    assert not (unpacked_wheel / "api").exists()
    assert list((unpacked_wheel / "vlbeam" / "pipeline" / "prompts").glob("*.txt"))
    # the report's templates, stylesheet and script ship as package data
    report = REPO / "outputs" / "report"
    for path in [*report.glob("templates/*"), *report.glob("static/*")]:
        assert (unpacked_wheel / "vlbeam" / path.relative_to(REPO)).is_file(), path


@pytest.mark.timeout(120)
def test_the_helper_process_and_prompts_resolve_from_the_wheel(unpacked_wheel):
    code = f"""
import vlbeam.pipeline.prompts as prompts, vlbeam.transforms.media.helper_process as helper
assert prompts.__file__.startswith({str(unpacked_wheel)!r}), prompts.__file__
assert helper.__file__.startswith({str(unpacked_wheel)!r}), helper.__file__
assert prompts.builtin_prompt("ocr_markdown_v1").text
import vlbeam.outputs.report.render as render
assert render.__file__.startswith({str(unpacked_wheel)!r}), render.__file__
assert "script-src 'sha256-" in render.content_security_policy()
assert render.environment().get_template("report.html.j2")
import vlbeam
assert vlbeam.__file__.startswith({str(unpacked_wheel)!r}), vlbeam.__file__
from vlbeam import Process, Settings, WriteTables
assert Process.__module__ == "vlbeam.pipeline.process", Process.__module__
worker = helper.HelperProcess()
data = open({str(REPO / "samples" / "born_digital.pdf")!r}, "rb").read()
assert worker.count_pages("0" * 64, data, None) == 1
worker.close()
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(unpacked_wheel)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=unpacked_wheel, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


def test_the_managed_server_dependency_comes_with_the_openai_extra_and_all(unpacked_wheel):
    """`--backend vllm|sglang` walks server process trees with psutil: `pip install
    vlbeam[openai]` (and `[all]`, which includes it) must bring it, pinned in constraints."""
    [meta] = unpacked_wheel.glob("vlbeam-*.dist-info/METADATA")
    requires = [
        line.split(":", 1)[1].strip()
        for line in meta.read_text().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    assert any(r.startswith("psutil") and 'extra == "openai"' in r for r in requires), requires
    assert any("openai" in r and 'extra == "all"' in r for r in requires), requires
    pins = (REPO / "constraints.txt").read_text().splitlines()
    assert any(line.startswith("psutil==") for line in pins)
