"""Rules for the suite itself: a missing test dependency is a skip locally and an error under
CI (`require_module`), never a silent `pytest.importorskip`; `.ci/run` sets `CI=true` itself,
so a local `bash .ci/run` fails where CI would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import require_module

REPO = Path(__file__).resolve().parents[1]


def test_no_test_skips_itself_past_require_module() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "importorskip" in line
    ]
    assert offenders == [], "use tests.conftest.require_module instead"


def test_ci_script_sets_ci_before_running_the_tests() -> None:
    script = (REPO / ".ci" / "run").read_text()
    exported = re.search(r"^export CI=true$", script, re.M)
    tests = re.search(r"^\S*python -m pytest", script, re.M)
    assert exported and tests and exported.start() < tests.start()


def test_require_module_is_an_error_under_ci_and_a_skip_otherwise(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    try:  # not pytest.raises: a skip would escape it and skip this test into green
        require_module("vlbeam_no_such_module", "dev")
        raised = None
    except BaseException as exc:
        raised = exc
    assert isinstance(raised, ImportError), repr(raised)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match=r"install vlbeam\[dev\]"):
        require_module("vlbeam_no_such_module", "dev")
    assert require_module("json", "dev").__name__ == "json"
