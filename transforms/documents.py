"""One `documents` row per matched file, with its status from what happened downstream."""

from __future__ import annotations

import apache_beam as beam

from vlbeam.pipeline.elements import Failure, Provenance, SourceFile


def document_status(num_ok: int, num_failures: int) -> str:
    """ok: every unit succeeded; partial: some did; failed: none did."""
    if num_ok == 0:
        return "failed"
    return "partial" if num_failures else "ok"


def document_row(
    source: SourceFile, num_pages: int | None, num_ok: int, num_failures: int, prov: Provenance
) -> dict:
    return {
        "doc_id": source.doc_id,
        "source_uri": source.uri,
        "kind": source.kind,
        "size_bytes": source.size_bytes,
        "status": document_status(num_ok, num_failures),
        "num_pages": num_pages,
        "num_failures": num_failures,
        "model": prov.model,
        "backend": prov.backend,
        "prompt_id": prov.prompt_id,
        "run_id": prov.run_id,
    }


def _rows(grouped, prov: Provenance):
    _uri, parts = grouped
    for source in parts["source"]:  # exactly one per matched uri
        num_pages = max(parts["num_pages"], default=None)
        yield document_row(source, num_pages, sum(parts["ok"]), sum(parts["failed"]), prov)


class SummarizeDocuments(beam.PTransform):
    """Join sources with page counts, page rows and failures (by source uri)."""

    def __init__(self, prov: Provenance) -> None:
        super().__init__()
        self._prov = prov

    def expand(self, inputs):
        sources, num_pages, page_rows, failures = inputs
        ok = (
            page_rows
            | "OkPerDoc" >> beam.Map(lambda row: (row["source_uri"], 1))
            | ("SumOk" >> beam.CombinePerKey(sum))
        )
        failed = (
            failures
            | "FailuresPerDoc" >> beam.Map(_failure_key)
            | ("SumFailures" >> beam.CombinePerKey(sum))
        )
        keyed_sources = sources | "KeySources" >> beam.Map(lambda s: (s.uri, s))
        return (
            {"source": keyed_sources, "num_pages": num_pages, "ok": ok, "failed": failed}
            | "JoinByDocument" >> beam.CoGroupByKey()
            | "DocumentRows" >> beam.FlatMap(_rows, self._prov)
        )


def _failure_key(failure: Failure) -> tuple[str, int]:
    return failure.source_uri, 1
