"""Which password opens which PDF, decided where the PDF is opened (on the worker).

Passwords never travel in the pipeline options or in pickled transforms: the options carry
only the *name* of an environment variable (`--pdf-password-env NAME`) and the *path* of a
passwords file (`--pdf-passwords-file URI`, any Beam filesystem). Both are read on the worker,
the file once per process. For one PDF the first of these that has a password wins:

1. the passwords file's entry for it (a JSON object, password by key; see `PasswordMap`);
2. the environment variable named by `--pdf-password-env`;
3. `--pdf-password` (deprecated: it sits in the pipeline options, which runners display).

The empty password is always tried first anyway (owner-only encryption needs none), and a
password is tried as given and in its SASLprep form (`pdf_render.open_pdf`).

Where the worker opens a PDF (`transforms/document_pages.py`) it resolves the password per file:
`helper.count_pages(doc_id, data, pdf_password(cfg, uri, doc_id))` to plan, and
`helper.render(doc_id, data, kind, page, with_pdf_password(cfg, uri, doc_id))` to render.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
import threading
from collections.abc import Callable, Mapping

from vlbeam.schemas.config import RenderConfig
from vlbeam.transforms.media.files import read_uri

_DOC_ID = re.compile(r"[0-9a-f]{64}")
_GLOB = re.compile(r"[*?\[]")


class PasswordsFileError(ValueError):
    """The passwords file can't be read or isn't a JSON object of strings (the message never
    quotes the file's content)."""


@dataclasses.dataclass(frozen=True)
class PasswordMap:
    """Per-file PDF passwords from a JSON object `{key: password}`. A key is, most specific
    first: a `doc_id` (the file's SHA-256, so the entry follows the content wherever it is
    copied); an exact URI (`gs://b/in/a.pdf`, `/data/in/a.pdf`); a glob on the whole URI
    (`gs://b/in/finance/*.pdf`); a bare file name or glob on the file name (`a.pdf`,
    `invoice-*.pdf`). Among globs the first in the file that matches wins."""

    entries: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never the passwords
        return f"PasswordMap({len(self.entries)} entries)"

    def lookup(self, uri: str, doc_id: str | None = None) -> str | None:
        exact = dict(self.entries)
        if doc_id and doc_id in exact:
            return exact[doc_id]
        if uri in exact:
            return exact[uri]
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        for key, password in self.entries:
            if _DOC_ID.fullmatch(key) or key == uri:
                continue
            if "/" in key:
                if _GLOB.search(key) and fnmatch.fnmatchcase(uri, key):
                    return password
            elif fnmatch.fnmatchcase(name, key):
                return password
        return None


def parse_passwords(text: str, source: str = "the PDF passwords file") -> PasswordMap:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:  # its message gives a position, never the text
        raise PasswordsFileError(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise PasswordsFileError(f'{source} must be a JSON object {{"file": "password"}}')
    entries = []
    for key, value in data.items():
        if not key or not isinstance(value, str):
            raise PasswordsFileError(
                f"{source}: every key must be non-empty and every password a string "
                f"(entry {len(entries) + 1} is not)"
            )
        entries.append((key, value))
    return PasswordMap(tuple(entries))


def _read_text(path: str) -> str:
    return read_uri(path).decode("utf-8")


_cache: dict[str, PasswordMap] = {}
_lock = threading.Lock()


def load_passwords(path: str, read: Callable[[str], str] | None = None) -> PasswordMap:
    """The passwords file at `path` (any Beam filesystem), read once per process."""
    with _lock:
        if path in _cache:
            return _cache[path]
        try:
            text = (read or _read_text)(path)
        except Exception as exc:  # the exception's text could quote the path only
            raise PasswordsFileError(
                f"cannot read the PDF passwords file {path}: {type(exc).__name__}"
            ) from None
        _cache[path] = found = parse_passwords(text, f"the PDF passwords file {path}")
        return found


def pdf_password(
    cfg: RenderConfig,
    uri: str,
    doc_id: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    read: Callable[[str], str] | None = None,
) -> str | None:
    """The password to try for the PDF at `uri` (None: only the empty password)."""
    if cfg.passwords_file:
        found = load_passwords(cfg.passwords_file, read).lookup(uri, doc_id)
        if found is not None:
            return found
    if cfg.password_env:
        found = (os.environ if environ is None else environ).get(cfg.password_env)
        if found:
            return found
    return cfg.password


def with_pdf_password(cfg: RenderConfig, uri: str, doc_id: str | None = None, **kw) -> RenderConfig:
    """`cfg` carrying this PDF's password (for the helper process: never pickled into the
    pipeline, never logged: RenderConfig's repr masks it)."""
    password = pdf_password(cfg, uri, doc_id, **kw)
    return cfg if password == cfg.password else dataclasses.replace(cfg, password=password)


def check_password_sources(
    cfg: RenderConfig, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Launcher-side checks: a passwords file that can't be read or parsed raises (before the
    job starts); returns warnings (never a password) for the log."""
    warnings = []
    if cfg.passwords_file:
        load_passwords(cfg.passwords_file)
    if cfg.password_env and cfg.password_env not in (os.environ if environ is None else environ):
        warnings.append(
            f"--pdf-password-env: {cfg.password_env} is not set here; it must be set where "
            "pages are rendered (the workers)"
        )
    if cfg.password:
        warnings.append(
            "--pdf-password travels in the pipeline options, which runners display and "
            "store; use --pdf-password-env NAME or --pdf-passwords-file URI instead"
        )
    return warnings
