"""Secrets kept out of logs, error messages, commands and manifests: one rule for what names
a secret, one mask.

- `is_secret_name(name)`: an option, flag, query parameter or JSON key whose name says it
  holds a secret (key, secret, password/passwd, passphrase, pwd, token, credential,
  connection string, auth, private, cookie, signature, `sig`), dashes and underscores alike
  (`--api-key`, `api_key`, `X-Api-Key`); a few names that hold no secret (`NOT_SECRET`: the
  name of a variable, a file's path) are exempt.
- `redact(value, secrets)`: every occurrence of a known secret value blanked out of a string
  or any JSON-able structure (values shorter than `MIN_REDACT` are not searched for: they
  would hit anything).
- `redact_command(argv)`: a command line for logs, the values of secret-named flags masked
  (`--api-key K`, `--api-key=K`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MASK = "***"
SECRET_NAME = re.compile(
    r"key|secret|passw|passphrase|pwd|token|credential|connection_?str|auth|private|cookie"
    r"|signature|^sig$",
    re.IGNORECASE,
)
# names that match the pattern but hold no secret: a variable's name, a file's path, scopes
NOT_SECRET = frozenset({"api_key_env", "pdf_password_env", "pdf_passwords_file",
                        "gcp_oauth_scopes"})  # fmt: skip
MIN_REDACT = 4  # shorter values are not searched for in other strings (they'd hit anything)


def is_secret_name(name: str) -> bool:
    """Whether an option, flag (leading dashes ignored), parameter or key names a secret."""
    name = name.strip().lstrip("-").replace("-", "_")
    return name.lower() not in NOT_SECRET and bool(SECRET_NAME.search(name))


def redact(value, secrets: Iterable[str]):
    """`value` (a string or any JSON-able structure) with every occurrence of a secret
    blanked out."""
    secrets = sorted({s for s in secrets if s and len(s) >= MIN_REDACT}, key=len, reverse=True)
    if not secrets:
        return value

    def walk(v):
        if isinstance(v, str):
            for secret in secrets:
                v = v.replace(secret, MASK)
            return v
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(value)


def redact_command(argv: Sequence[str]) -> list[str]:
    """The command for logs and messages: values of flags with a secret name
    (`is_secret_name`) masked, whether given as `--flag VALUE` or `--flag=VALUE`."""
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        name, eq, _value = arg.partition("=")
        if name.startswith("-") and is_secret_name(name):
            out.append(f"{name}={MASK}" if eq else arg)
            mask_next = not eq
        else:
            out.append(arg)
    return out
