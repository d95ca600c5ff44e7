"""The folders are layers: no import runs upward between them.

schemas (ground types) ← transforms.media (pure media code) ← transforms.backends (models)
← transforms (Beam stages) ← pipeline (the job); runners stands beside the job. outputs (the
dataset on disk: layout, publish, manifest, compaction, loading, the report) sees only schemas
and transforms.media; the job imports it.
transforms.answers (reading a model's answers: degenerate answers, retries, grounding spans)
stands beside media on the ground types: it imports `schemas` and itself only, and the stages
and the job may import it.
The package's top, `vlbeam` (api/__init__.py: the public names), stands over everything: it
may import any layer, and no module of vlbeam imports it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# layer of a module → the vlbeam packages it may import
LAYERS = {
    "vlbeam.schemas": {"vlbeam.schemas"},
    "vlbeam.transforms.media": {"vlbeam.schemas", "vlbeam.transforms.media"},
    "vlbeam.transforms.answers": {"vlbeam.schemas", "vlbeam.transforms.answers"},
    "vlbeam.transforms.backends": {
        "vlbeam.schemas",
        "vlbeam.transforms.media",
        "vlbeam.transforms.backends",
    },
    "vlbeam.transforms": {
        "vlbeam.schemas",
        "vlbeam.transforms.media",
        "vlbeam.transforms.backends",
        "vlbeam.transforms.answers",
        "vlbeam.transforms",
    },
    "vlbeam.runners": {"vlbeam.runners"},
    "vlbeam.outputs": {"vlbeam.schemas", "vlbeam.transforms.media", "vlbeam.outputs"},
    "vlbeam.pipeline": {
        "vlbeam.schemas",
        "vlbeam.transforms.media",
        "vlbeam.transforms.backends",
        "vlbeam.transforms.answers",
        "vlbeam.transforms",
        "vlbeam.runners",
        "vlbeam.outputs",
        "vlbeam.pipeline",
    },
}
ALLOWED = {**LAYERS, "vlbeam": {"vlbeam"} | set(LAYERS)}


TOP = REPO / "api" / "__init__.py"  # is vlbeam/__init__.py (pyproject's package-dir)


def _module_name(path: Path) -> str:
    if path == TOP:
        return "vlbeam"
    rel = path.relative_to(REPO).with_suffix("")
    return "vlbeam." + ".".join(part for part in rel.parts if part != "__init__")


def _layer(module: str) -> str:
    return max((layer for layer in ALLOWED if (module + ".").startswith(layer + ".")), key=len)


def _vlbeam_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "vlbeam"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vlbeam"):
            found.add(node.module)
    return found


SOURCES = sorted(
    [
        TOP,
        *(
            p
            for folder in ("schemas", "transforms", "pipeline", "runners", "outputs")
            for p in (REPO / folder).rglob("*.py")
        ),
    ]
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_import_runs_upward(path):
    layer = _layer(_module_name(path))
    for imported in _vlbeam_imports(path):
        target = _layer(imported)
        assert target in ALLOWED[layer], f"{layer} must not import {imported}"


def test_the_layer_picture_covers_every_package():
    packages = {_module_name(p.parent / "__init__.py") for p in SOURCES if p.name == "__init__.py"}
    for package in packages:  # only the top itself is in the top's layer
        assert _layer(package) in ALLOWED, package
        assert (_layer(package) == "vlbeam") == (package == "vlbeam"), package
    assert {
        "vlbeam",
        "vlbeam.transforms.media",
        "vlbeam.transforms.backends",
        "vlbeam.transforms.answers",
        "vlbeam.outputs",
    } <= packages


# a string literal that starts a partition folder name, or names a bookkeeping folder
_LAYOUT_NAME = re.compile(r"""[fbrFBR]*["'](?:run=|_runs\b|_staging\b|_compactions\b)""")


def test_only_the_layout_module_spells_the_dataset_folders():
    """`DIR/<table>/run=<id>/`, `_runs/`, `_staging/`, `_compactions/` are spelled in
    outputs/layout.py alone; everything else asks it."""
    layout = REPO / "outputs" / "layout.py"
    assert _LAYOUT_NAME.search(layout.read_text())  # the check can see what it looks for
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in [*SOURCES, *sorted((REPO / "bench").rglob("*.py"))]
        if path != layout
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _LAYOUT_NAME.search(line)
    ]
    assert found == []


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


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """The vlbeam modules `path` imports, at the top or inside a function (`from pkg import
    module` counts as importing that module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vlbeam"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or ({node.module} & modules)
    return found


def test_no_import_cycle_between_modules():
    """No two modules import each other, directly or around a longer loop, not even lazily
    (a lazy import inside a function is how a cycle hides)."""
    paths = {_module_name(p): p for p in SOURCES}
    graph = {name: _module_imports(path, set(paths)) - {name} for name, path in paths.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                loop = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [name, nxt]
                raise AssertionError("import cycle: " + " -> ".join(loop))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_planners_and_answer_checks_import_no_beam():
    """The report re-plans a run's windows (`media.work_units`) and reads answers without
    Beam: the pure planners and `answers` must not load it."""
    import subprocess
    import sys

    code = (
        "import sys, vlbeam.transforms.media.work_units, vlbeam.transforms.answers.degenerate, "
        "vlbeam.transforms.answers.retry, vlbeam.transforms.answers.grounding_parse, "
        "vlbeam.transforms.media.text_layer, vlbeam.transforms.backends.server_spec; "
        "print('apache_beam' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_nothing_imports_the_top_and_the_top_imports_no_beam():
    """`vlbeam/__init__.py` is the public face: no module imports it (a module that did
    would load every public name), and importing it loads neither Beam nor pyarrow."""
    import subprocess
    import sys

    for path in SOURCES:
        if path != TOP:
            assert "vlbeam" not in _vlbeam_imports(path), path
    assert _module_name(TOP) == "vlbeam" and _layer("vlbeam") == "vlbeam"
    code = "import sys, vlbeam; print('apache_beam' in sys.modules, 'pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
