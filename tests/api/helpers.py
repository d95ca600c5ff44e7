"""Shared by the public-API tests: inputs, a fake API that answers pages and video windows,
and matchers that check every row against its table's schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
from apache_beam.testing.util import BeamAssertException

from tests.fake_api_server import Answer, Recorded

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SPAN = [{"start": 1.0, "end": 2.5, "description": "a red square appears"}]


def copy_samples(folder: Path) -> dict[str, str]:
    """The samples in `folder` (two PDFs and a video): name → URI."""
    folder.mkdir(parents=True, exist_ok=True)
    uris = {}
    for name in ("born_digital.pdf", "scanned_page.pdf", "red_square.mp4"):
        shutil.copy(SAMPLES / name, folder / name)
        uris[name] = str(folder / name)
    return uris


def answers(rec: Recorded) -> Answer:
    """One JSON span for a video window (several frames), a line of markdown for a page."""
    if len(rec.image_urls) > 1:
        return Answer(text=json.dumps(SPAN))
    return Answer(text="# A page")


def api_flags(server, *extra: str) -> list[str]:
    return ["--backend", "openai", "--provider", "openai", "--api-model", "m",
            "--base-url", server.base_url, "--api-key-env", "", "--no-preflight",
            "--target-long-side", "400", *extra]  # fmt: skip


def video_flags() -> list[str]:
    """Small, quick windows: the 12 s sample in 5 s windows at 1 frame per second."""
    return ["--window-seconds", "5", "--window-overlap-seconds", "1", "--fps", "1",
            "--max-pixels-per-frame", "16384"]  # fmt: skip


def fits_schema(table: str, schema: pa.Schema):
    """A matcher: every row has exactly the table's columns and survives a round trip
    through the table's pyarrow schema unchanged. Returns the rows for further checks."""

    def match(rows):
        rows = list(rows)
        for row in rows:
            if set(row) != set(schema.names):
                raise BeamAssertException(f"{table}: columns {sorted(row)} != {schema.names}")
        arrow = pa.Table.from_pylist(rows, schema=schema)
        back = arrow.to_pylist(maps_as_pydicts="strict")
        if back != rows:
            raise BeamAssertException(f"{table}: rows change through the schema")

    return match


def all_of(*matchers):
    def match(rows):
        rows = list(rows)
        for matcher in matchers:
            matcher(rows)

    return match


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BeamAssertException(message)
