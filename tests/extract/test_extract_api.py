# ruff: noqa: E402  (the test dependency check runs before the imports that need it)
"""`--extract` end to end through `vlbeam run` with a local OpenAI-compatible server: the
schema on the request (`response_format` json_schema), an invalid answer retried with the
validator's errors in the next prompt, never-valid answers kept as rows, failed requests as
failures rows, and a document over `--extract-chunk-chars` extracted per chunk and merged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_module

require_module("aiohttp", "openai")
require_module("jsonschema", "extract")

from tests.fake_api_server import Answer, FakeApiServer, Recorded, status
from tests.pipeline_helpers import inked_page, read_table, run_job

SCHEMA = {
    "title": "Invoice",
    "type": "object",
    "$defs": {"money": {"type": "number", "minimum": 0}},
    "properties": {
        "number": {"type": "string"},
        "total": {"$ref": "#/$defs/money"},
        "items": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["number", "total", "items"],
    "additionalProperties": False,
}
VALID = {"number": "INV-7", "total": 12.5, "items": ["a"]}


def api_args(server, *extra: str) -> list[str]:
    return ["--backend=openai", "--provider=openai", "--api-model=m", "--no-preflight",
            f"--base-url={server.base_url}", "--api-key-env=", "--target-long-side=300",
            *extra]  # fmt: skip


def is_extraction(rec: Recorded) -> bool:
    return not rec.image_urls


def prompt_of(rec: Recorded) -> str:
    return "\n".join(rec.texts)


def pdf(path: Path, pages: int = 2) -> Path:
    images = [inked_page((300, 400), label=f"page {n}") for n in range(1, pages + 1)]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def schema_file(tmp_path: Path, schema=SCHEMA) -> Path:
    path = tmp_path / "invoice.schema.json"
    path.write_text(json.dumps(schema))
    return path


def test_invalid_answer_is_retried_with_the_validators_errors(tmp_path, capsys):
    calls = []

    def answer(rec: Recorded):
        if not is_extraction(rec):
            return Answer(text="Invoice INV-7, total 12.50, item a")
        calls.append(rec)
        bad = {"number": "INV-7", "total": -3, "items": "a"}  # two schema errors
        return Answer(text=json.dumps(bad if len(calls) == 1 else VALID), prompt_tokens=50)

    out = tmp_path / "out"
    with FakeApiServer(answer) as server:
        run_job([str(pdf(tmp_path / "inv.pdf"))], out,
                *api_args(server, f"--extract={schema_file(tmp_path)}"))  # fmt: skip
    assert len(calls) == 2
    first, second = (rec.body for rec in calls)
    # the documented OpenAI/vLLM/SGLang shape, the schema itself ($defs kept, canonical)
    fmt = first["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Invoice"
    assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["schema"] == SCHEMA
    assert "guided_json" not in first  # ignored by vLLM >= 0.12: never sent
    assert prompt_of(calls[0]).count("Invoice INV-7, total 12.50, item a") == 2  # both pages
    retry = prompt_of(calls[1])
    assert "not valid against the schema" in retry
    assert "total: -3 is less than the minimum of 0" in retry
    assert "items: 'a' is not of type 'array'" in retry
    assert second["response_format"] == fmt

    [row] = read_table(out, "extractions")
    assert row["valid"] is True and row["errors"] == [] and row["attempts"] == 2
    assert json.loads(row["json"]) == VALID
    assert row["scope"] == "document" and row["page_number"] is None
    assert row["schema_id"].startswith("Invoice:") and len(row["schema_id"]) == len("Invoice:") + 12
    assert row["guided"] == "response_format:json_schema" and row["chunks"] == 1
    assert row["input_tokens"] == 100  # both attempts counted
    assert row["prompt_id"] == "extract_json_v1" and row["source_uri"].endswith("inv.pdf")
    assert "extractions: 1 valid, 0 invalid, 0 failed (1 retries" in capsys.readouterr().out


def test_never_valid_is_a_row_and_a_failed_request_a_failure(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    pdf(src / "a.pdf", 1)
    pdf(src / "b.pdf", 1)

    def answer(rec: Recorded):
        return Answer(text="not json at all" if is_extraction(rec) else "text of a page")

    out = tmp_path / "out"
    with FakeApiServer(answer) as server:
        run_job([str(src / "*.pdf")], out,
                *api_args(server, f"--extract={schema_file(tmp_path)}", "--extract-retries=1",
                          "--extract-scope=page"))  # fmt: skip
        sent = [r for r in server.model_requests() if is_extraction(r)]
    rows = read_table(out, "extractions")
    assert len(sent) == 4  # 2 pages x (1 + 1 retry)
    assert len(rows) == 2
    for row in rows:
        assert row["valid"] is False and row["json"] == "not json at all"
        assert row["attempts"] == 2 and row["errors"][0].startswith("(root): not valid JSON")
        assert row["scope"] == "page" and row["page_number"] == 1
    assert "extractions: 0 valid, 2 invalid, 0 failed" in capsys.readouterr().out


def test_a_failed_extraction_request_is_a_failures_row(tmp_path):
    def answer(rec: Recorded):
        return Answer(text=json.dumps(VALID) if is_extraction(rec) else "page text")

    out = tmp_path / "out"
    with FakeApiServer(answer) as server:
        server.always(status(400, "schema not supported"), match=is_extraction)
        run_job([str(pdf(tmp_path / "inv.pdf", 1))], out,
                *api_args(server, f"--extract={schema_file(tmp_path)}"))  # fmt: skip
    assert read_table(out, "extractions") == []
    [failure] = read_table(out, "failures")
    assert failure["stage"] == "extract" and "schema not supported" in failure["message"]
    assert len(read_table(out, "pages")) == 1  # OCR kept


def test_document_over_the_chunk_bound_is_extracted_per_chunk_and_merged(tmp_path):
    def answer(rec: Recorded):
        if not is_extraction(rec):
            return Answer(text=f"page {len(rec.image_urls)} " + "words " * 200)
        text = prompt_of(rec)
        part = 1 if "part 1 of" in text else 2
        value = {"number": "INV-7" if part == 2 else None, "total": 10.0 * part,
                 "items": [f"from part {part}"]}  # fmt: skip
        return Answer(text=json.dumps(value))

    nullable = {"type": ["string", "null"]}
    schema = dict(SCHEMA, properties=dict(SCHEMA["properties"], number=nullable))
    out = tmp_path / "out"
    with FakeApiServer(answer) as server:
        run_job([str(pdf(tmp_path / "long.pdf", 2))], out,
                *api_args(server, f"--extract={schema_file(tmp_path, schema)}",
                          "--extract-chunk-chars=1500"))  # fmt: skip
        prompts = [prompt_of(r) for r in server.model_requests() if is_extraction(r)]
    assert len(prompts) == 2 and "part 1 of 2" in prompts[0] and "part 2 of 2" in prompts[1]
    [row] = read_table(out, "extractions")
    assert row["chunks"] == 2 and row["valid"] is True
    merged = json.loads(row["json"])
    assert merged == {"number": "INV-7", "total": 10.0, "items": ["from part 1", "from part 2"]}
    assert json.loads(row["field_chunks"]) == {"number": 1, "total": 0}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"type": "objekt"}', "not a valid JSON Schema at type"),
        ("{nope", "not JSON"),
        ('{"properties": {"a": {"$ref": "#/$defs/missing"}}}', "unresolvable $ref"),
        ('{"properties": {"a": {"$ref": "https://x.test/a.json"}}}', "points outside the file"),
    ],
)
def test_a_bad_schema_fails_at_launch_in_one_line(tmp_path, content, message, capsys):
    from vlbeam.pipeline.cli import main

    path = tmp_path / "bad.json"
    path.write_text(content)
    code = main(["run", f"--input={tmp_path}/*.pdf", f"--output={tmp_path}/out",
                 "--backend=openai", "--base-url=http://127.0.0.1:9/v1", "--api-model=m",
                 f"--extract={path}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and message in err and str(path) in err


@pytest.mark.slow
def test_skip_existing_knows_the_schema(tmp_path):
    def answer(rec: Recorded):
        return Answer(text=json.dumps(VALID) if is_extraction(rec) else "page text")

    out = tmp_path / "out"
    doc = str(pdf(tmp_path / "inv.pdf", 1))
    changed = dict(SCHEMA, description="now with a description")
    with FakeApiServer(answer) as server:

        def run(schema, run_id):
            server.reset()
            run_job([doc], out, *api_args(server, f"--extract={schema}", "--skip-existing",
                                          f"--run-id={run_id}"))  # fmt: skip
            return sum(is_extraction(r) for r in server.model_requests())

        assert run(schema_file(tmp_path), "a") == 1
        assert run(schema_file(tmp_path), "b") == 0  # same schema: done
        other = tmp_path / "changed"
        other.mkdir()
        assert run(schema_file(other, changed), "c") == 1  # a changed schema re-extracts
        assert run(schema_file(other, changed), "d") == 0
    rows = read_table(out, "extractions")
    assert [r["run_id"] for r in sorted(rows, key=lambda r: r["run_id"])] == ["a", "c"]
    assert len({r["schema_id"] for r in rows}) == 2
    docs = {d["run_id"]: d["status"] for d in read_table(out, "documents")}
    assert docs == {"a": "ok", "b": "skipped", "c": "ok", "d": "skipped"}


def test_report_shows_extractions_beside_their_document_invalid_first(tmp_path):
    require_module("jinja2", "report")
    from vlbeam.pipeline.cli import main as cli_main

    tries = []

    def answer(rec: Recorded):
        if not is_extraction(rec):
            return Answer(text="page text")
        tries.append(rec)
        return Answer(text=json.dumps(VALID) if len(tries) == 1 else '{"number": 7}')

    out = tmp_path / "out"
    with FakeApiServer(answer) as server:
        run_job([str(pdf(tmp_path / "two.pdf", 2))], out,
                *api_args(server, f"--extract={schema_file(tmp_path)}", "--extract-retries=0",
                          "--extract-scope=page", "--max-concurrency=1"))  # fmt: skip
    rows = {r["page_number"]: r["valid"] for r in read_table(out, "extractions")}
    assert sorted(rows.values()) == [False, True]
    invalid_page = next(n for n, valid in rows.items() if not valid)
    html_path = tmp_path / "report.html"
    assert cli_main(["report", str(out), "-o", str(html_path)]) == 0
    html = html_path.read_text()
    blocks = [b for b in html.split('<div class="extraction')[1:]]
    assert len(blocks) == 2
    assert blocks[0].startswith(" suspect") and f"extraction of page {invalid_page}" in blocks[0]
    assert "number: 7 is not of type" in blocks[0] and "INV-7" in blocks[1]
    assert "guided: response_format:json_schema" in blocks[1]


def form_pdf(path: Path, pages: int = 1) -> Path:
    """A generated form: labelled fields and a ticked checkbox, drawn."""
    from PIL import Image, ImageDraw

    images = []
    for n in range(pages):
        page = Image.new("RGB", (400, 300), "white")
        draw = ImageDraw.Draw(page)
        draw.text((10, 10), f"Application form, page {n + 1}", fill="black")
        draw.text((10, 50), "Name: Ada Lovelace", fill="black")
        draw.rectangle((10, 90, 30, 110), outline="black", width=2)
        draw.line((12, 100, 20, 108, 28, 92), fill="black", width=3)  # the tick
        draw.text((40, 92), "I agree", fill="black")
        images.append(page)
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


FORM = {
    "title": "Form",
    "type": "object",
    "properties": {"name": {"type": "string"}, "agree": {"type": "boolean"}},
    "required": ["name", "agree"],
}


def test_extract_from_images_sends_the_rendered_pages_with_the_schema(tmp_path):
    def answer(rec: Recorded):
        if "JSON Schema" not in prompt_of(rec):
            return Answer(text="Application form")
        return Answer(text=json.dumps({"name": "Ada Lovelace", "agree": True}))

    src = tmp_path / "in"
    src.mkdir()
    form_pdf(src / "form.pdf", 1)
    form_pdf(src / "long_form.pdf", 3)
    out = tmp_path / "out"
    with FakeApiServer(answer) as server:
        run_job([str(src / "*.pdf")], out,
                *api_args(server, f"--extract={schema_file(tmp_path, FORM)}",
                          "--extract-from=images", "--extract-max-pages=2"))  # fmt: skip
        asked = [r for r in server.model_requests() if "JSON Schema" in prompt_of(r)]
    [request] = asked  # the 3-page form is over --extract-max-pages: not sent
    assert len(request.images) == 1 and request.images[0][:4] in (b"\x89PNG", b"RIFF")
    assert "Document:" not in prompt_of(request)  # the page image is the document
    assert request.body["response_format"]["json_schema"]["schema"] == FORM
    [row] = read_table(out, "extractions")
    assert (
        row["valid"] and row["extract_from"] == "images" and row["source_uri"].endswith("/form.pdf")
    )
    assert json.loads(row["json"]) == {"agree": True, "name": "Ada Lovelace"}
    [failure] = read_table(out, "failures")
    assert failure["stage"] == "extract" and failure["error_type"] == "TooManyPages"
    assert failure["source_uri"].endswith("long_form.pdf") and "3 pages" in failure["message"]
    assert len(read_table(out, "pages")) == 4  # OCR of every page is kept
