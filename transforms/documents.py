"""One `documents` row per matched file, with its status from what happened downstream."""

from __future__ import annotations

import apache_beam as beam

from vlbeam.schemas.elements import DocumentFacts, Failure, SourceFile
from vlbeam.schemas.meta import Meta, meta_column


def document_status(num_ok: int, num_failures: int, skipped: bool = False) -> str:
    """ok: every unit (page, video window) succeeded; partial: some did; failed: none did;
    skipped: processed OK by an earlier run with the same model and prompt (--skip-existing)."""
    if skipped:
        return "skipped"
    if num_ok == 0:
        return "failed"
    return "partial" if num_failures else "ok"


def document_row(
    source: SourceFile,
    facts: DocumentFacts,
    num_ok: int,
    num_failures: int,
    provenance: dict,
    run_id: str,
) -> dict:
    """`facts`: what ingest and planning learnt (num_pages, duration_s, skipped);
    `provenance` the model, backend and prompt_id used for this kind of document."""
    return {
        "doc_id": source.doc_id,
        "source_uri": source.uri,
        "kind": source.kind,
        "size_bytes": source.size_bytes,
        "status": document_status(num_ok, num_failures, facts.skipped),
        "num_pages": facts.num_pages,
        "duration_s": facts.duration_s,
        "num_failures": num_failures,
        "model": provenance.get("model"),
        "backend": provenance.get("backend"),
        "prompt_id": provenance.get("prompt_id"),
        "run_id": run_id,
        "meta": meta_column(source.meta),
    }


def _rows(grouped, provenance_by_kind: dict[str, dict], run_id: str):
    (uri, meta), parts = grouped
    facts = DocumentFacts(uri, meta=meta)
    for found in parts["facts"]:
        facts = facts.merged(found)
    for source in parts["source"]:  # exactly one per input (uri, meta)
        provenance = provenance_by_kind.get(source.kind, {})
        yield document_row(
            source, facts, sum(parts["ok"]), sum(parts["failed"]), provenance, run_id
        )


def _failure_key(failure: Failure) -> tuple[tuple[str, Meta], int]:
    return failure.key, 1


class SummarizeDocuments(beam.PTransform):
    """Join sources with split facts, successful units and failures by input: (source uri,
    carried keys), so one file listed with two sets of keys is two documents.

    Input: (sources, DocumentFacts, ok units as (uri, meta) pairs, failures).
    """

    def __init__(self, provenance_by_kind: dict[str, dict], run_id: str) -> None:
        super().__init__()
        self._provenance = provenance_by_kind
        self._run_id = run_id

    def expand(self, inputs):
        sources, facts, ok_uris, failures = inputs
        ok = (
            ok_uris
            | "OkPerDoc" >> beam.Map(lambda key: (key, 1))
            | ("SumOk" >> beam.CombinePerKey(sum))
        )
        failed = (
            failures
            | "FailuresPerDoc" >> beam.Map(_failure_key)
            | ("SumFailures" >> beam.CombinePerKey(sum))
        )
        keyed_sources = sources | "KeySources" >> beam.Map(lambda s: (s.key, s))
        facts = facts | "KeyFacts" >> beam.Map(lambda f: (f.key, f))
        return (
            {"source": keyed_sources, "facts": facts, "ok": ok, "failed": failed}
            | "JoinByDocument" >> beam.CoGroupByKey()
            | "DocumentRows" >> beam.FlatMap(_rows, self._provenance, self._run_id)
        )
