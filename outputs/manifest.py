"""The run manifest (`outputs/layout.py` places it): what ran (inputs and output as absolute URIs),
with which options and versions, what came out, and how it ended.

No secret is written to it:
- an option whose name says it holds one (key, secret, password, token, credential,
  connection string, auth, private, cookie, signature) is recorded as `***`, whatever flag
  set it: Beam's `--s3_secret_access_key`, `--s3_access_key_id`, `--s3_session_token`,
  `--azure_connection_string`, vlbeam's `--pdf-password`;
- a flag no registered options class defines (a pass-through such as `--some_api_key`) is
  recorded by name only, its value `***`;
- inside the values kept, a URL's password and secret-named query parameters (`sig`, tokens),
  the value of a `NAME=VALUE` item or a JSON key with a secret name are masked;
- the values masked, and the variables named by `--api-key-env`/`--pdf-password-env` as set
  here, are also blanked out of the one free text, the error message of a failed run.
Booleans and numbers are kept (no secret is a flag switch; `--max-new-tokens` is a count).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from importlib import metadata
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from vlbeam.outputs.layout import manifest_path
from vlbeam.outputs.publish import write_manifest
from vlbeam.schemas import SCHEMA_VERSION
from vlbeam.schemas.redaction import MASK, redact
from vlbeam.schemas.redaction import is_secret_name as _is_secret_name

ENV_NAME_OPTIONS = ("api_key_env", "pdf_password_env")  # their variables' values are secrets
VERSIONED = ("vlbeam", "apache-beam", "pyarrow", "transformers", "torch", "av", "pypdfium2",
             "aiohttp")  # fmt: skip


def package_versions() -> dict[str, str | None]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def absolute_uri(path: str) -> str:
    """`gs://b/x` and other URIs as given (their password masked); a local path made absolute
    (`~` expanded), so the manifest says what was read wherever it is read from."""
    if "://" in path:
        return _mask_url(path, set())
    return os.path.abspath(os.path.expanduser(path))


def _known_option_names(options=None) -> set[str]:
    """Every option dest some registered `PipelineOptions` subclass defines (Beam's public
    `get_all_options`, which parses with every subclass's arguments)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions([]) if options is None else options
    return set(options.get_all_options(retain_unknown_options=False))


def _mask_url(value: str, found: set[str]) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    netloc = parts.netloc
    if parts.password:
        found.add(parts.password)
        netloc = netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret_name(k) for k, _ in pairs):
            found.update(v for k, v in pairs if _is_secret_name(k))
            query = urlencode([(k, MASK if _is_secret_name(k) else v) for k, v in pairs])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_value(value, found: set[str]):
    """Secrets inside a value that is not itself secret (see the module docstring)."""
    if isinstance(value, list | tuple):
        return [_mask_value(v, found) for v in value]
    if isinstance(value, dict):
        return {k: _mask_named(k, v, found) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if stripped.startswith("{"):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return json.dumps(_mask_value(parsed, found), sort_keys=True)
    if "://" in value:
        return _mask_url(value, found)
    name, sep, rest = value.partition("=")
    if sep and name and _is_secret_name(name.strip()):
        found.add(rest)
        return f"{name}={MASK}"
    return value


def _mask_named(name: str, value, found: set[str]):
    if isinstance(value, bool | int | float) or value is None:
        return value
    if _is_secret_name(name):
        _collect(value, found)
        return MASK
    return _mask_value(value, found)


def _collect(value, found: set[str]) -> None:
    if isinstance(value, str):
        found.add(value)
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, found)


def safe_options(options, found: set[str] | None = None) -> dict:
    """The pipeline options that differ from their defaults, with every secret masked;
    `found` collects the secret values (to blank them out elsewhere)."""
    found = set() if found is None else found
    values = options.get_all_options(drop_default=True, retain_unknown_options=True)
    known = _known_option_names(options)
    safe = {}
    for name, value in sorted(values.items()):
        if name not in known and not isinstance(value, bool):
            _collect(value, found)  # an unknown pass-through flag: recorded by name only
            safe[name] = MASK
        elif name == "input" and value:
            safe[name] = [absolute_uri(v) for v in value]
        elif name == "output" and value:
            safe[name] = absolute_uri(value)
        else:
            safe[name] = _mask_named(name, value, found)
    for name in ENV_NAME_OPTIONS:
        env = values.get(name)
        if env and os.environ.get(env):
            found.add(os.environ[env])
    return safe


class RunManifest:
    def __init__(self, run_id: str, opts, options) -> None:
        self.run_id = run_id
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self._secrets: set[str] = set()
        self._base = {
            "run_id": run_id,
            "inputs": [absolute_uri(p) for p in opts.input or ()],
            "input_manifests": [absolute_uri(p) for p in opts.input_manifest or ()],
            "output": absolute_uri(opts.output),
            "options": safe_options(options, self._secrets),
            "versions": package_versions(),
            "schema_version": SCHEMA_VERSION,
        }

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self._started

    def record(self, status: str, *, counts=None, error: str | None = None, **extra) -> dict:
        """The manifest as written: publish writes the `succeeded` one as the commit record."""
        return {
            **self._base,
            **extra,
            "status": status,
            "started_at": self.started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "wall_s": round(self.wall_s, 3),
            "counts": counts or {},
            "error": redact(error, self._secrets),  # the only free text: it may quote a flag
        }

    def redact(self, text: str | None) -> str | None:
        return redact(text, self._secrets)

    def finish(self, output: str, status: str, *, counts=None, error: str | None = None) -> str:
        """Write the manifest of a run that did not commit (`failed`). A committed manifest of
        the same run id (an earlier attempt's) is left as it is: it is what readers see.
        (Checked, then written: two attempts of one run id at the same moment may race.)"""
        if status != "succeeded" and committed_manifest(output, self.run_id):
            return manifest_path(output, self.run_id)
        return write_manifest(output, self.run_id, self.record(status, counts=counts, error=error))


def committed_manifest(output: str, run_id: str) -> bool:
    """Whether `run_id` has a committed manifest in `output`."""
    from vlbeam.outputs.store import read_bytes

    data = read_bytes(manifest_path(output, run_id))
    try:
        return bool(data) and json.loads(data).get("status") == "succeeded"
    except ValueError:
        return False
