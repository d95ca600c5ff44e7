"""Ingest: expand file patterns through Beam FileSystems, hash and sniff every file.

Works for local paths and any registered filesystem (gs://, s3://, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from vlbeam.schemas.elements import DocumentFacts, Failure, SourceFile
from vlbeam.schemas.errors import (
    EmptyFile,
    NoFilesMatched,
    TaskNotEnabled,
    UnsupportedInput,
)
from vlbeam.schemas.ids import sha256_hex
from vlbeam.transforms.dead_letter import FAILURES_TAG, NAMESPACE, dead_letter
from vlbeam.transforms.media.sniff import HEAD_BYTES, sniff_kind

logger = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
SKIPPED_TAG = "skipped"


def match_pattern(pattern: str) -> tuple[list[str], Failure | None]:
    """The files a pattern matches, or a failure row when it matches none."""
    try:
        result = FileSystems.match([pattern])[0]
        paths = sorted(m.path for m in result.metadata_list)
    except Exception as exc:
        return [], Failure.from_exception(exc, source_uri=pattern, doc_id=None, stage="ingest")
    if not paths:
        err = NoFilesMatched(f"input pattern {pattern!r} matched no files")
        return [], Failure.from_exception(err, source_uri=pattern, doc_id=None, stage="ingest")
    return paths, None


def identify_file(uri: str) -> tuple[SourceFile, str]:
    """Hash (SHA-256, streamed) and sniff one file. Returns the source and a format detail."""
    head, size = b"", 0

    def chunks() -> Iterator[bytes]:
        nonlocal head, size
        with FileSystems.open(uri, compression_type="uncompressed") as handle:
            while chunk := handle.read(READ_CHUNK):
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                size += len(chunk)
                yield chunk

    doc_id = sha256_hex(chunks())
    kind, detail = sniff_kind(head)
    return SourceFile(uri=uri, doc_id=doc_id, kind=kind, size_bytes=size), detail


def unprocessable_reason(
    source: SourceFile, detail: str, tasks: frozenset[str]
) -> Exception | None:
    """Why a file can't go further in this run (None when it can)."""
    if source.kind in ("pdf", "image"):
        return (
            None
            if "ocr" in tasks
            else TaskNotEnabled(
                f"{source.kind} input needs --tasks ocr, which is not enabled in this run"
            )
        )
    if source.kind == "video":
        return (
            None
            if "grounding" in tasks
            else TaskNotEnabled(
                "video input needs --tasks grounding, which is not enabled in this run"
            )
        )
    if source.size_bytes == 0:
        return EmptyFile("file is empty (0 bytes)")
    what = "audio without video" if source.kind == "audio" else detail
    return UnsupportedInput(
        f"unsupported file type ({what}); vlbeam reads PDF, PNG/JPEG/TIFF/WebP images and video"
    )


class _MatchPatterns(beam.DoFn):
    def process(self, pattern: str):
        paths, failure = match_pattern(pattern)
        if failure is not None:
            yield dead_letter(failure)
        yield from paths


class _IdentifyFiles(beam.DoFn):
    def __init__(self, tasks: frozenset[str], prompt_by_kind: dict[str, str]) -> None:
        self._tasks = tasks
        self._prompt_by_kind = prompt_by_kind
        self._documents = Metrics.counter(NAMESPACE, "documents")
        self._skipped = Metrics.counter(NAMESPACE, "documents_skipped")

    def process(self, uri: str, done=None):
        self._documents.inc()
        try:
            source, detail = identify_file(uri)
        except Exception as exc:
            failure = Failure.from_exception(exc, source_uri=uri, doc_id=None, stage="ingest")
            yield SourceFile(uri=uri, doc_id=None, kind="unknown", size_bytes=None)
            yield dead_letter(failure)
            return
        yield source
        key = (source.doc_id, self._prompt_by_kind.get(source.kind))
        if done and key in done:  # --skip-existing: same content, model and prompt, done
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(SKIPPED_TAG, DocumentFacts(uri, skipped=True))
            return
        reason = unprocessable_reason(source, detail, self._tasks)
        if reason is not None:
            stage = "task" if isinstance(reason, TaskNotEnabled) else "sniff"
            yield dead_letter(
                Failure.from_exception(reason, source_uri=uri, doc_id=source.doc_id, stage=stage)
            )
        else:
            yield beam.pvalue.TaggedOutput(source.kind, source)


class IngestFiles(beam.PTransform):
    """patterns → a dict of PCollections: `sources` (every matched file, once, as a
    SourceFile), `pdf`, `image` and `video` (the ones to process), and `failures`."""

    def __init__(
        self,
        tasks: frozenset[str],
        prompt_by_kind: dict[str, str] | None = None,
        done=None,
    ) -> None:
        """`done`: optional PCollection of ((doc_id, prompt_id), True) already processed OK
        with this model (for --skip-existing), used as a side input."""
        super().__init__()
        self._tasks = tasks
        self._prompt_by_kind = prompt_by_kind or {}
        self._done = done

    def expand(self, patterns):
        matched = patterns | "MatchPatterns" >> beam.ParDo(_MatchPatterns()).with_outputs(
            FAILURES_TAG, main="paths"
        )
        identified = (
            matched.paths
            | "DistinctPaths" >> beam.Distinct()
            | "SpreadFiles" >> beam.Reshuffle()
            | "HashAndSniff"
            >> beam.ParDo(
                _IdentifyFiles(self._tasks, self._prompt_by_kind),
                done=beam.pvalue.AsDict(self._done) if self._done is not None else None,
            ).with_outputs(FAILURES_TAG, SKIPPED_TAG, "pdf", "image", "video", main="sources")
        )
        failures = (
            matched[FAILURES_TAG],
            identified[FAILURES_TAG],
        ) | "IngestFailures" >> beam.Flatten()
        return {
            "sources": identified.sources,
            "pdf": identified.pdf,
            "image": identified.image,
            "video": identified.video,
            "skipped": identified[SKIPPED_TAG],
            "failures": failures,
        }
