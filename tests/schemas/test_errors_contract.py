"""`failures.error_type` is a data contract: every vlbeam error that can reach the table is
defined in `schemas/errors.py`, and its name is pinned here (renaming one changes warehouse
data: do it on purpose, with a note for the people who query it)."""

from __future__ import annotations

import ast
from pathlib import Path

from vlbeam.schemas import errors
from vlbeam.schemas.elements import Failure

REPO = Path(__file__).resolve().parents[2]

PINNED = {
    "VlbeamError",
    "EmptyFile",
    "UnsupportedInput",
    "TaskNotEnabled",
    "NoFilesMatched",
    "FileNotFound",
    "InvalidInput",
    "InvalidPdf",
    "EncryptedPdf",
    "NoPages",
    "InvalidImage",
    "PageTooLarge",
    "DegeneratePage",
    "RenderTimeout",
    "RendererCrashed",
    "InvalidVideo",
    "NoVideoStream",
    "EmptyWindow",
    "UnparseableAnswer",
    "TooManyPages",
    "ModelNotFound",
    "MissingApiKey",
    "PreflightFailed",
    "ServerCrash",
    "EngineUnavailable",
    "BudgetExceeded",
    "ApiError",
    "RemoteError",
}


def _subclasses(cls) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_the_error_types_are_the_pinned_set():
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.VlbeamError)
    }
    assert defined == PINNED


def test_no_vlbeam_error_is_defined_anywhere_else():
    for folder in ("pipeline", "transforms", "schemas", "runners"):
        for path in (REPO / folder).rglob("*.py"):
            if path == REPO / "schemas" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                    assert not bases & PINNED, f"{path.relative_to(REPO)}: class {node.name}"


def test_error_type_names_that_reach_the_table():
    assert errors.error_type(errors.ApiError("x", status=429)) == "HTTP429"
    assert errors.error_type(errors.ApiError("x")) == "ApiConnectionError"
    assert errors.error_type(errors.RemoteError("InvalidPdf", "x")) == "InvalidPdf"
    failure = Failure.from_exception(
        errors.EmptyWindow("no frame"), source_uri="u", doc_id=None, stage="decode"
    )
    assert (failure.error_type, failure.message) == ("EmptyWindow", "no frame")
    # every pinned class is what its name says (no alias hides a rename)
    for name in PINNED:
        assert getattr(errors, name).__name__ == name


def test_the_readme_lists_every_error_type():
    readme = (REPO / "README.md").read_text()
    missing = sorted(name for name in PINNED - {"VlbeamError", "RemoteError", "ApiError"}
                     if f"`{name}`" not in readme)  # fmt: skip
    assert not missing, f"README does not list {missing}"
    assert "`HTTP<status>`" in readme and "`ApiConnectionError`" in readme
