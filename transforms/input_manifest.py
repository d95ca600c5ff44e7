"""`--input-manifest FILE`: a table of inputs, one row per file, on any Beam filesystem.

The file is CSV (with a header), JSON Lines, or Parquet, told by its name (`.csv`, `.jsonl` /
`.ndjson` / `.json`, `.parquet` / `.pq`, each optionally `.gz` except Parquet). It has a `uri`
column; every other column is carried to every row made from that file as `meta`
(`schemas/meta.py`). pyarrow's own readers parse it (CSV cells are read as text, so `007`
stays `007`; a JSON value that is not a string is kept as its JSON text; a JSON Lines column
must keep one type throughout). The rows are read on a worker, a block at a time, and become
the same inputs as elements given to `vlbeam.Process`: a row with no `uri` is an
`InvalidInput` failure, a row whose file is missing a `FileNotFound` failure.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import CompressionTypes, FileSystems

from vlbeam.schemas.meta import URI_KEY

FORMATS = {
    ".csv": "csv",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def manifest_format(path: str) -> str:
    """csv, json or parquet, from the file's name."""
    name = path.lower().removesuffix(".gz")
    for suffix, kind in FORMATS.items():
        if name.endswith(suffix):
            if kind == "parquet" and path.lower().endswith(".gz"):
                break
            return kind
    raise ValueError(
        f"--input-manifest {path}: name it .csv, .jsonl (.ndjson, .json) or .parquet "
        "(CSV and JSON Lines may be .gz)"
    )


@contextlib.contextmanager
def _open(path: str):
    """The manifest's bytes (a `.gz` one decompressed by Python's gzip, which pyarrow's
    readers read like any file)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if path.lower().endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
                yield unpacked
        else:
            yield raw


def _batches(handle, kind: str, names: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(handle).iter_batches(batch_size=10_000)
    elif kind == "csv":
        import pyarrow.csv as pacsv

        convert = (
            pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
            if names is not None
            else None
        )
        yield from pacsv.open_csv(handle, convert_options=convert)
    else:
        import pyarrow.json as pajson

        yield from pajson.open_json(handle)


def manifest_columns(path: str) -> list[str]:
    """The manifest's column names, read from its head (a Parquet file's footer); raises
    ValueError when it can't be read or has no `uri` column. Run at launch, so a wrong
    manifest stops the job before any work."""
    kind = manifest_format(path)
    try:
        with _open(path) as handle:
            if kind == "parquet":
                import pyarrow.parquet as pq

                names = pq.ParquetFile(handle).schema_arrow.names
            elif kind == "csv":
                import pyarrow.csv as pacsv

                names = pacsv.open_csv(handle).schema.names
            else:
                import pyarrow.json as pajson

                names = pajson.open_json(handle).schema.names
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"--input-manifest {path}: cannot read it ({exc})") from None
    if URI_KEY not in names:
        raise ValueError(
            f"--input-manifest {path}: needs a {URI_KEY!r} column; it has {sorted(names)}"
        )
    return names


def manifest_rows(path: str) -> Iterator[dict]:
    """Every row of the manifest as a dict (column → value; CSV cells as text), a block at
    a time."""
    kind = manifest_format(path)
    names = manifest_columns(path) if kind == "csv" else None
    with _open(path) as handle:
        for batch in _batches(handle, kind, names):
            yield from batch.to_pylist()


class ReadManifests(beam.PTransform):
    """Manifest paths → their rows (dicts with `uri` and the carried columns), spread over
    the workers."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self._paths = list(paths)

    def expand(self, pbegin):
        return (
            pbegin
            | "ManifestPaths" >> beam.Create(self._paths)
            | "ManifestRows" >> beam.FlatMap(manifest_rows)
            | "SpreadRows" >> beam.Reshuffle()
        )
