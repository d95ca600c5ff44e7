"""Reading a whole (small) file from any Beam filesystem: local paths, gs://, s3://."""

from __future__ import annotations

from pathlib import Path


def read_uri(uri: str) -> bytes:
    """The bytes of the file at `uri` (Beam's FileSystems for anything with a scheme)."""
    if "://" not in uri:
        return Path(uri).read_bytes()
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(uri, compression_type="uncompressed") as handle:
        return handle.read()
