"""vlbeam: PDFs, images and long videos to warehouse-ready tables with Qwen3-VL, as Apache Beam
transforms.

The public surface (README, "Use it from your own pipeline"); everything else is internal:

- `Process`: inputs (file URIs, or dicts with a `uri` key whose other keys are carried to
  every row as `meta`) → `ProcessResult`, one PCollection per output table
  (`.documents`, `.pages`, `.video_windows`, `.video_events`, `.failures`, `.blocks`,
  `.tables`, `.figures`, `.document_text`).
- `Settings`, and the configs it groups: `JobConfig`, `ModelConfig`, `RenderConfig`,
  `PagePolicy`, `VideoConfig`, `LayoutConfig`, `ApiConfig`, `ServerSpec`.
- `WriteTables` + `publish`: the tables as vlbeam's Parquet dataset (what `vlbeam run` does).
- `TABLES` (table name → pyarrow schema), `row_type` (table → Beam row type), `ToRows`.
- `document_id`: how a `doc_id` is made from a file's SHA-256 and its carried keys.

Importing `vlbeam` is cheap: each name loads (with Beam, pyarrow) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = [
    "TABLES",
    "ApiConfig",
    "JobConfig",
    "LayoutConfig",
    "ModelConfig",
    "PagePolicy",
    "Process",
    "ProcessResult",
    "RenderConfig",
    "ServerSpec",
    "Settings",
    "ToRows",
    "VideoConfig",
    "WriteTables",
    "document_id",
    "publish",
    "row_type",
]

# public name → the module that defines it
_WHERE = {
    "Process": "vlbeam.pipeline.process",
    "ProcessResult": "vlbeam.pipeline.process",
    "Settings": "vlbeam.pipeline.settings",
    "WriteTables": "vlbeam.pipeline.write_tables",
    "publish": "vlbeam.pipeline.write_tables",
    "JobConfig": "vlbeam.pipeline.job_config",
    "ModelConfig": "vlbeam.schemas.config",
    "RenderConfig": "vlbeam.schemas.config",
    "PagePolicy": "vlbeam.schemas.config",
    "LayoutConfig": "vlbeam.schemas.config",
    "VideoConfig": "vlbeam.transforms.media.work_units",
    "ApiConfig": "vlbeam.transforms.backends.openai_protocol",
    "ServerSpec": "vlbeam.transforms.backends.server_spec",
    "TABLES": "vlbeam.schemas",
    "row_type": "vlbeam.transforms.rows",
    "ToRows": "vlbeam.transforms.rows",
    "document_id": "vlbeam.schemas.ids",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from vlbeam.pipeline.job_config import JobConfig
    from vlbeam.pipeline.process import Process, ProcessResult
    from vlbeam.pipeline.settings import Settings
    from vlbeam.pipeline.write_tables import WriteTables, publish
    from vlbeam.schemas import TABLES
    from vlbeam.schemas.config import LayoutConfig, ModelConfig, PagePolicy, RenderConfig
    from vlbeam.schemas.ids import document_id
    from vlbeam.transforms.backends.openai_protocol import ApiConfig
    from vlbeam.transforms.backends.server_spec import ServerSpec
    from vlbeam.transforms.media.work_units import VideoConfig
    from vlbeam.transforms.rows import ToRows, row_type


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'vlbeam' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
