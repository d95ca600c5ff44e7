"""The folders are layers: no import runs upward between them.

schemas (ground types) ← transforms.media (pure media code) ← transforms.backends (models)
← transforms (Beam stages) ← pipeline (the job); runners stands beside the job.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# layer of a module → the vlbeam packages it may import
ALLOWED = {
    "vlbeam.schemas": {"vlbeam.schemas"},
    "vlbeam.transforms.media": {"vlbeam.schemas", "vlbeam.transforms.media"},
    "vlbeam.transforms.backends": {
        "vlbeam.schemas",
        "vlbeam.transforms.media",
        "vlbeam.transforms.backends",
    },
    "vlbeam.transforms": {
        "vlbeam.schemas",
        "vlbeam.transforms.media",
        "vlbeam.transforms.backends",
        "vlbeam.transforms",
    },
    "vlbeam.runners": {"vlbeam.runners"},
    "vlbeam.pipeline": {
        "vlbeam.schemas",
        "vlbeam.transforms.media",
        "vlbeam.transforms.backends",
        "vlbeam.transforms",
        "vlbeam.runners",
        "vlbeam.pipeline",
    },
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    return "vlbeam." + ".".join(part for part in rel.parts if part != "__init__")


def _layer(module: str) -> str:
    return max((layer for layer in ALLOWED if (module + ".").startswith(layer + ".")), key=len)


def _vlbeam_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vlbeam.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vlbeam"):
            found.add(node.module)
    return found


SOURCES = sorted(
    p
    for folder in ("schemas", "transforms", "pipeline", "runners")
    for p in (REPO / folder).rglob("*.py")
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_import_runs_upward(path):
    layer = _layer(_module_name(path))
    for imported in _vlbeam_imports(path):
        target = _layer(imported)
        assert target in ALLOWED[layer], f"{layer} must not import {imported}"


def test_the_layer_picture_covers_every_package():
    packages = {_module_name(p.parent / "__init__.py") for p in SOURCES if p.name == "__init__.py"}
    for package in packages:
        assert _layer(package) in ALLOWED, package
    assert {"vlbeam.transforms.media", "vlbeam.transforms.backends"} <= packages


def test_the_ground_types_and_the_helper_process_import_no_pyarrow():
    """The helper process runs under a tight address-space limit (--render-memory-mb): what it
    imports must stay small, so the table schemas load only when a table is written."""
    import subprocess
    import sys

    code = (
        "import sys, vlbeam.schemas.config, vlbeam.schemas.elements, vlbeam.schemas.errors, "
        "vlbeam.transforms.media.helper_process; print('pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
