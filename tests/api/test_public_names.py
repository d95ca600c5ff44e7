"""The public surface: what `vlbeam` exports is listed, typed, documented in the README, and
cheap to import; this file imports nothing but `vlbeam` itself."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import vlbeam

REPO = Path(__file__).resolve().parents[2]
PUBLIC = {
    "Process", "ProcessResult", "Settings", "JobConfig", "ModelConfig", "RenderConfig",
    "PagePolicy", "VideoConfig", "LayoutConfig", "ApiConfig", "ServerSpec", "WriteTables",
    "publish", "TABLES", "row_type", "ToRows", "document_id",
}  # fmt: skip


def test_the_public_names_are_the_listed_ones_and_all_resolve():
    assert set(vlbeam.__all__) == PUBLIC
    for name in vlbeam.__all__:
        assert getattr(vlbeam, name) is not None, name
    namespace: dict = {}
    exec("from vlbeam import *", namespace)
    assert set(namespace) >= PUBLIC


def test_an_unknown_name_is_an_attribute_error():
    try:
        vlbeam.build_pipeline  # noqa: B018 - internal names are not public
    except AttributeError as exc:
        assert "build_pipeline" in str(exc)
    else:
        raise AssertionError("vlbeam exposes an internal name")


def test_public_callables_are_typed():
    for name in ("Process", "WriteTables", "publish", "row_type", "document_id", "ToRows"):
        target = getattr(vlbeam, name)
        signature = inspect.signature(target.__init__ if inspect.isclass(target) else target)
        for param in signature.parameters.values():
            if param.name in ("self", "configs"):
                continue
            assert param.annotation is not inspect.Parameter.empty, (name, param.name)
    assert (REPO / "api" / "py.typed").is_file()


def test_the_readme_lists_every_public_name():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use it from your own pipeline", 1)[1].split("\n## ", 1)[0]
    for name in PUBLIC:
        assert re.search(rf"`(vlbeam\.)?{name}[`(]", section), name


def test_import_vlbeam_loads_neither_beam_nor_pyarrow():
    code = (
        "import sys, vlbeam; print('apache_beam' in sys.modules, 'pyarrow' in sys.modules); "
        "vlbeam.Process; print('apache_beam' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_every_table_is_an_attribute_of_the_result():
    tables = [n for n in vlbeam.ProcessResult.__annotations__ if n != "run_id"]
    assert tables == list(vlbeam.TABLES)
