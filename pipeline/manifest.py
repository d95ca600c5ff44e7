"""The run manifest, `DIR/_runs/<run_id>.json`: what ran, with which options and versions,
what came out, and how it ended. Secrets are never in it (API keys are not options at all;
the PDF password is masked)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from importlib import metadata

from vlbeam.pipeline.output import write_manifest

SECRET_OPTIONS = ("pdf_password",)
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


def safe_options(options) -> dict:
    """All pipeline options that differ from their defaults, secrets masked."""
    values = options.get_all_options(drop_default=True, retain_unknown_options=True)
    return {k: ("***" if k in SECRET_OPTIONS and v else v) for k, v in sorted(values.items())}


class RunManifest:
    def __init__(self, run_id: str, opts, options) -> None:
        self.run_id = run_id
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self._base = {
            "run_id": run_id,
            "inputs": list(opts.input),
            "output": opts.output,
            "options": safe_options(options),
            "versions": package_versions(),
        }

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self._started

    def finish(self, output: str, status: str, *, counts=None, error: str | None = None) -> str:
        manifest = {
            **self._base,
            "status": status,
            "started_at": self.started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "wall_s": round(self.wall_s, 3),
            "counts": counts or {},
            "error": error,
        }
        return write_manifest(output, self.run_id, manifest)
