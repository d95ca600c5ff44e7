"""The two write primitives publishing relies on, on every filesystem vlbeam writes to.

- `create_if_absent(path, data)`: the object appears with all of `data`, or not at all, and
  only if nothing is at `path` yet; exactly one of several concurrent callers gets True.
  The publish lease (outputs/lease.py) is built on it alone.
- `write_whole(path, data)`: replaces `path` so a reader sees the old bytes or the new ones,
  never a part (the commit record).

What each filesystem offers (Beam's `FileSystems` has no conditional create, so vlbeam asks
the store's own client):
- local and mounted folders: the bytes go to a temporary file, then `os.link` (fails with
  EEXIST if the name is taken; atomic on POSIX filesystems and NFS) or, for the whole-file
  write, `os.replace`. Where hard links are refused (some FUSE mounts, SMB), `os.open` with
  `O_CREAT | O_EXCL` then a write: still exclusive, but a reader may see the object before
  its bytes (the lease reader treats an unreadable record as taken and waits). gcsfuse-style
  mounts that neither link nor honour O_EXCL are not safe: write to gs:// directly.
- gs://: `google-cloud-storage` (what Beam's GCS filesystem uses) with
  `if_generation_match=0`, GCS's create-if-absent precondition; a single-object upload is
  atomic.
- s3://: `boto3` (what Beam's S3 filesystem uses) `put_object(IfNoneMatch="*")`, S3's
  conditional write (since 2024; S3-compatible stores that ignore it are not safe); a PUT is
  atomic.
- any other scheme: `FileSystems.exists` then `create` (not exclusive: two publishers at
  the very same moment could both take the lease), with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import secrets

logger = logging.getLogger(__name__)


def _scheme(path: str) -> str:
    return path.split("://", 1)[0] if "://" in path else ""


def _split_bucket(path: str) -> tuple[str, str]:
    bucket, _, key = path.split("://", 1)[1].partition("/")
    return bucket, key


def _local_temp(path: str, data: bytes) -> str:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return temp


def create_if_absent(path: str, data: bytes) -> bool:
    """Create `path` holding `data` only if nothing is there; True if this call created it."""
    scheme = _scheme(path)
    if not scheme:
        return _local_create(path, data)
    if scheme == "gs":
        return _gcs_create(path, data)
    if scheme == "s3":
        return _s3_create(path, data)
    from apache_beam.io.filesystems import FileSystems

    logger.warning("%s:// has no create-if-absent here: the publish lease is best effort", scheme)
    if FileSystems.exists(path):
        return False
    with FileSystems.create(path) as handle:
        handle.write(data)
    return True


def _local_create(path: str, data: bytes) -> bool:
    temp = _local_temp(path, data)
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here: exclusive create, then the bytes
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _gcs_bucket(bucket: str):
    from google.cloud import storage  # Beam's GCS filesystem depends on it

    return storage.Client().bucket(bucket)


def _gcs_create(path: str, data: bytes) -> bool:
    from google.api_core.exceptions import PreconditionFailed

    bucket, key = _split_bucket(path)
    try:
        _gcs_bucket(bucket).blob(key).upload_from_string(data, if_generation_match=0)
    except PreconditionFailed:
        return False
    return True


def _s3_client():
    import boto3  # Beam's S3 filesystem depends on it

    return boto3.client("s3")


def _s3_create(path: str, data: bytes) -> bool:
    from botocore.exceptions import ClientError

    bucket, key = _split_bucket(path)
    try:
        _s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            return False
        raise
    return True


def write_whole(path: str, data: bytes) -> None:
    """Replace `path` with `data`: readers see the old bytes or the new, never a part."""
    if not _scheme(path):
        temp = _local_temp(path, data)
        try:
            os.replace(temp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        return
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as handle:  # an object appears whole when it is closed
        handle.write(data)


def read_bytes(path: str) -> bytes | None:
    """The bytes at `path`; None if nothing is there."""
    if not _scheme(path):
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            return handle.read()
    except Exception:
        if not FileSystems.exists(path):
            return None
        raise


def delete_quietly(paths: list[str]) -> None:
    """Delete what is there of `paths` (bookkeeping that is no longer needed)."""
    if not paths:
        return
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.delete(paths)
    except Exception as exc:
        logger.debug("could not delete %s: %s", paths[:3], exc)


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))
