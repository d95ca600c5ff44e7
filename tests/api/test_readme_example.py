"""The README's "Use it from your own pipeline" example, run as written: its first Python block
is extracted from README.md and executed in a folder holding its `inputs.csv`, with the hosted
API's endpoint (`OCR_BASE_URL`) pointed at a local fake and a made-up key in the environment."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.api.helpers import copy_samples
from tests.fake_api_server import Answer, FakeApiServer

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("## Use it from your own pipeline", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the section has no python block"
    return match.group(1)


@pytest.mark.timeout(600)
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    uris = copy_samples(tmp_path / "in")
    work = tmp_path / "work"
    work.mkdir()
    (work / "inputs.csv").write_text(
        "uri,customer_id\n"
        f"{uris['born_digital.pdf']},c-001\n"
        f"{uris['scanned_page.pdf']},c-002\n"
        f"{tmp_path / 'in' / 'gone.pdf'},c-003\n"
    )
    monkeypatch.chdir(work)
    monkeypatch.setenv("DASHSCOPE_API_KEY", "test-key-not-real")
    with FakeApiServer(lambda rec: Answer(text="# Invoice 42")) as server:
        monkeypatch.setenv("OCR_BASE_URL", server.base_url)
        exec(compile(readme_example(), str(README), "exec"), {"__name__": "readme_example"})
        sent = server.model_requests()
    assert len(sent) == 2  # one request per page
    assert all(r.header("Authorization") == "Bearer test-key-not-real" for r in sent)
    pages = [json.loads(line) for f in sorted(work.glob("pages*.jsonl"))
             for line in f.read_text().splitlines()]  # fmt: skip
    assert sorted((p["customer_id"], p["page"], p["text"]) for p in pages) == [
        ("c-001", 1, "# Invoice 42"),
        ("c-002", 1, "# Invoice 42"),
    ]
    failures = [json.loads(line) for f in sorted(work.glob("failures*.jsonl"))
                for line in f.read_text().splitlines()]  # fmt: skip
    assert [(f["error_type"], f["meta"]) for f in failures] == [
        ("FileNotFound", {"customer_id": "c-003"})
    ]
