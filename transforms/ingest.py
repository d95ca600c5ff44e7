"""Ingest: inputs → identified files. Inputs are `--input` patterns (expanded through Beam
FileSystems) or caller elements: a URI string, or a mapping with a `uri` key whose other keys
travel along as `meta` (`schemas/meta.py`). Every file is hashed and sniffed once per input.

Works for local paths and any registered filesystem (gs://, s3://, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from vlbeam.schemas.elements import DocumentFacts, Failure, InputFile, SourceFile
from vlbeam.schemas.errors import (
    EmptyFile,
    FileNotFound,
    InvalidInput,
    NoFilesMatched,
    TaskNotEnabled,
    UnsupportedInput,
)
from vlbeam.schemas.ids import document_id, sha256_hex
from vlbeam.schemas.meta import URI_KEY, Meta, normalize_meta
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


def input_file(element: Any) -> InputFile:
    """A caller's element as an input: a URI string, an `InputFile`, or a mapping with a
    `uri` key (its other keys carried as meta). Raises InvalidInput otherwise."""
    if isinstance(element, InputFile):
        return element
    if isinstance(element, str):
        if not element:
            raise InvalidInput("an input URI is empty")
        return InputFile(element)
    if isinstance(element, Mapping):
        uri = element.get(URI_KEY)
        if not isinstance(uri, str) or not uri:
            raise InvalidInput(
                f"an input mapping needs a non-empty string under {URI_KEY!r}, got {uri!r}"
            )
        return InputFile(uri, normalize_meta(element))
    raise InvalidInput(
        f"an input must be a URI string or a mapping with a {URI_KEY!r} key, got "
        f"{type(element).__name__}"
    )


def invalid_input_failure(element: Any, exc: Exception) -> Failure:
    """The `ingest` failure of an element that names no file; a mapping's other keys still
    ride along, so the caller can find which of its rows it was."""
    meta: Meta = None
    uri = ""
    if isinstance(element, Mapping):
        meta = normalize_meta(element)
        uri = str(element.get(URI_KEY) or "")
    return Failure.from_exception(exc, source_uri=uri, doc_id=None, stage="ingest", meta=meta)


def identify_file(uri: str, meta: Meta = None) -> tuple[SourceFile, str]:
    """Hash (SHA-256, streamed) and sniff one file. Returns the source and a format detail.
    `doc_id` is `schemas.ids.document_id` of the hash and the carried keys."""
    head, size = b"", 0

    def chunks() -> Iterator[bytes]:
        nonlocal head, size
        with FileSystems.open(uri, compression_type="uncompressed") as handle:
            while chunk := handle.read(READ_CHUNK):
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                size += len(chunk)
                yield chunk

    content = sha256_hex(chunks())
    kind, detail = sniff_kind(head)
    source = SourceFile(
        uri=uri,
        doc_id=document_id(content, meta),
        kind=kind,
        size_bytes=size,
        meta=meta,
        content_sha256=content,
    )
    return source, detail


def unreadable(uri: str, exc: Exception) -> Exception:
    """What to record when a file can't be read: `FileNotFound` when nothing is there (an
    exact URI from a caller or a manifest), else the error itself."""
    try:
        missing = not FileSystems.exists(uri)
    except Exception:
        missing = False
    return FileNotFound(f"no file at {uri}") if missing else exc


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
        for path in paths:
            yield InputFile(path)


class _ToInputFiles(beam.DoFn):
    def process(self, element):
        try:
            yield input_file(element)
        except InvalidInput as exc:
            yield dead_letter(invalid_input_failure(element, exc))


class MatchPatterns(beam.PTransform):
    """File patterns → `InputFile`s (no meta) on `inputs`, and a `NoFilesMatched` failure
    for a pattern that matches nothing on `failures`."""

    def expand(self, patterns):
        matched = patterns | "Match" >> beam.ParDo(_MatchPatterns()).with_outputs(
            FAILURES_TAG, main="inputs"
        )
        return {"inputs": matched.inputs, "failures": matched[FAILURES_TAG]}


class ToInputFiles(beam.PTransform):
    """Caller elements (URI strings, mappings with a `uri` key) → `InputFile`s on `inputs`,
    and an `InvalidInput` failure for an element that names no file on `failures`."""

    def expand(self, elements):
        read = elements | "Read" >> beam.ParDo(_ToInputFiles()).with_outputs(
            FAILURES_TAG, main="inputs"
        )
        return {"inputs": read.inputs, "failures": read[FAILURES_TAG]}


class _IdentifyFiles(beam.DoFn):
    def __init__(self, tasks: frozenset[str], prompt_by_kind: dict[str, str]) -> None:
        self._tasks = tasks
        self._prompt_by_kind = prompt_by_kind
        self._documents = Metrics.counter(NAMESPACE, "documents")
        self._skipped = Metrics.counter(NAMESPACE, "documents_skipped")

    def process(self, item: InputFile, done=None):
        self._documents.inc()
        uri = item.uri
        try:
            source, detail = identify_file(uri, item.meta)
        except Exception as exc:
            source = SourceFile(uri=uri, doc_id=None, kind="unknown", size_bytes=None,
                                meta=item.meta)  # fmt: skip
            yield source
            yield dead_letter(source.failure(unreadable(uri, exc), "ingest"))
            return
        yield source
        key = (source.doc_id, self._prompt_by_kind.get(source.kind))
        if done and key in done:  # --skip-existing: same content, keys, model and prompt
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(
                SKIPPED_TAG, DocumentFacts(uri, skipped=True, meta=item.meta)
            )
            return
        reason = unprocessable_reason(source, detail, self._tasks)
        if reason is not None:
            stage = "task" if isinstance(reason, TaskNotEnabled) else "sniff"
            yield dead_letter(source.failure(reason, stage))
        else:
            yield beam.pvalue.TaggedOutput(source.kind, source)


class IngestFiles(beam.PTransform):
    """`InputFile`s → a dict of PCollections: `sources` (every input, once per (uri, meta),
    as a SourceFile), `pdf`, `image` and `video` (the ones to process), `skipped`, and
    `failures`."""

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

    def expand(self, inputs):
        identified = (
            inputs
            | "InputKeys" >> beam.Map(lambda item: item.key)  # (uri, meta): plain tuples
            | "DistinctInputs" >> beam.Distinct()
            | "Inputs" >> beam.MapTuple(InputFile)
            | "SpreadFiles" >> beam.Reshuffle()
            | "HashAndSniff"
            >> beam.ParDo(
                _IdentifyFiles(self._tasks, self._prompt_by_kind),
                done=beam.pvalue.AsDict(self._done) if self._done is not None else None,
            ).with_outputs(FAILURES_TAG, SKIPPED_TAG, "pdf", "image", "video", main="sources")
        )
        return {
            "sources": identified.sources,
            "pdf": identified.pdf,
            "image": identified.image,
            "video": identified.video,
            "skipped": identified[SKIPPED_TAG],
            "failures": identified[FAILURES_TAG],
        }
