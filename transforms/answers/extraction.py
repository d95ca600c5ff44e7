"""Reading `--extract` answers: the user's JSON Schema (loaded, checked, identified), the
prompt that asks for it (and re-asks with the validator's errors), validation with
`jsonschema`, and the merge of per-chunk answers of an over-long document.

Pure functions over JSON values; the Beam stage is `transforms/extract.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

MAX_ERRORS = 20  # validator messages kept per answer (and shown in a retry prompt)


class ExtractSchemaError(ValueError):
    """The --extract file is not a JSON Schema (raised at launch, one line)."""


@dataclass(frozen=True)
class ExtractSchema:
    """A checked JSON Schema: its canonical text (what requests and workers carry) and its id
    (`title:sha256[:12]` of the canonical text: a changed schema is a new id)."""

    schema_id: str
    text: str

    @property
    def schema(self) -> dict:
        return json.loads(self.text)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_schema(raw: str, where: str = "--extract") -> ExtractSchema:
    """`raw` (a file's text) → ExtractSchema, or ExtractSchemaError with the JSON parser's or
    the metaschema validator's message. `$ref`s resolve within the document (`#/$defs/...`)."""
    import jsonschema

    try:
        schema = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ExtractSchemaError(f"{where}: not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise ExtractSchemaError(f"{where}: a JSON Schema must be an object")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ExtractSchemaError(
            f"{where}: not a valid JSON Schema at {path}: {exc.message}"
        ) from None
    text = canonical_json(schema)
    import referencing
    import referencing.jsonschema

    resource = referencing.Resource.from_contents(
        schema, default_specification=referencing.jsonschema.DRAFT202012
    )
    resolver = (
        referencing.Registry()
        .with_resource("urn:vlbeam:schema", resource)
        .resolver(base_uri="urn:vlbeam:schema")
    )
    for ref in _refs(schema):  # every $ref resolves within the file: nothing fetched later
        if not ref.startswith("#"):
            raise ExtractSchemaError(f"{where}: $ref {ref!r} points outside the file")
        try:
            resolver.lookup(ref)
        except Exception as exc:
            raise ExtractSchemaError(f"{where}: unresolvable $ref {ref!r}: {exc}") from None
    title = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(schema.get("title") or "schema")).strip("_")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return ExtractSchema(f"{title or 'schema'}:{digest}", text)


def _refs(value: Any):
    if isinstance(value, dict):
        if isinstance(value.get("$ref"), str):
            yield value["$ref"]
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _validator(schema_text: str):
    import jsonschema

    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_answer(schema_text: str, value: Any) -> list[str]:
    """The validator's messages for `value` (empty: valid), each `path: message`, sorted by
    path, at most MAX_ERRORS."""
    errors = sorted(_validator(schema_text).iter_errors(value), key=lambda e: list(e.path))
    out = []
    for error in errors[:MAX_ERRORS]:
        path = "/".join(str(p) for p in error.absolute_path)
        out.append(f"{path or '(root)'}: {error.message}")
    return out


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def read_answer(schema_text: str, text: str | None) -> tuple[Any, list[str]]:
    """(the parsed JSON value or None, errors). A fenced ```json block is unwrapped; text that
    is not JSON is one error."""
    raw = (text or "").strip()
    fenced = _FENCE.match(raw)
    if fenced:
        raw = fenced.group(1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, [f"(root): not valid JSON: {exc}"]
    return value, validate_answer(schema_text, value)


def extraction_prompt(
    instruction: str,
    schema_text: str,
    document_text: str | None,
    *,
    errors: list[str] | None = None,
    previous: str | None = None,
    chunk: tuple[int, int] | None = None,
) -> str:
    """The prompt of one extraction request: instruction, schema, the document's text (None:
    the page images are attached), and on a retry the previous answer with the validator's
    errors. The word JSON is always in it (DashScope's json_object mode requires it)."""
    parts = [instruction.strip(), "JSON Schema:", schema_text]
    if chunk is not None and chunk[1] > 1:
        parts.append(
            f"This is part {chunk[0] + 1} of {chunk[1]} of the document: extract what this "
            "part says; use null (or an empty list) for what it does not."
        )
    if document_text is not None:
        parts += ["Document:", document_text]
    if errors:
        shown = (previous or "").strip()[:4000]
        parts += [
            "Your previous answer was not valid against the schema:",
            shown,
            "Validation errors:",
            *[f"- {e}" for e in errors[:MAX_ERRORS]],
            "Answer again with corrected JSON only.",
        ]
    return "\n\n".join(parts)


def split_text(pages: list[str], max_chars: int) -> list[str]:
    """A document's page texts in order → chunks of at most `max_chars` characters, split at
    page boundaries (a page longer than that alone is split at line breaks, then hard)."""
    pieces: list[str] = []
    for page in pages:
        if len(page) <= max_chars:
            pieces.append(page)
            continue
        line_chunk = ""
        for line in page.splitlines(keepends=True):
            while len(line) > max_chars:
                if line_chunk:
                    pieces.append(line_chunk)
                    line_chunk = ""
                pieces.append(line[:max_chars])
                line = line[max_chars:]
            if len(line_chunk) + len(line) > max_chars:
                pieces.append(line_chunk)
                line_chunk = ""
            line_chunk += line
        if line_chunk:
            pieces.append(line_chunk)
    chunks: list[str] = []
    current = ""
    sep = "\n\n"
    for piece in pieces:
        joined = f"{current}{sep}{piece}" if current else piece
        if current and len(joined) > max_chars:
            chunks.append(current)
            current = piece
        else:
            current = joined
    if current or not chunks:
        chunks.append(current)
    return chunks


def merge_chunks(values: list[Any]) -> tuple[Any, dict[str, int]]:
    """Merge the answers of a document's chunks (in order) into one: for an object, each
    top-level array is the concatenation of the chunks' arrays, every other field the first
    non-null value (its chunk index recorded in the returned map); non-object answers: the
    first non-null. The merged value is validated again by the caller."""
    objects = [v for v in values if isinstance(v, dict)]
    if not objects:
        for index, value in enumerate(values):
            if value is not None:
                return value, {"": index}
        return None, {}
    merged: dict[str, Any] = {}
    sources: dict[str, int] = {}
    keys = list(dict.fromkeys(k for v in objects for k in v))
    for key in keys:
        found = [(i, v[key]) for i, v in enumerate(values) if isinstance(v, dict) and key in v]
        if all(isinstance(value, list) for _, value in found):
            merged[key] = [item for _, value in found for item in value]
            continue
        first = next(((i, value) for i, value in found if value is not None), found[0])
        merged[key] = first[1]
        sources[key] = first[0]
    return merged, sources
