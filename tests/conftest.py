"""Shared fixtures: the real-file corpus (../shared/corpus) and the tiny Qwen3-VL checkpoint."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def _corpus_root() -> Path:
    return Path(os.environ.get("VLBEAM_CORPUS") or REPO.parent / "shared" / "corpus")


def require_module(name: str, extra: str):
    """Import a test dependency; missing is a skip locally and an error under CI (`CI=true`)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is missing (install vlbeam[{extra}])"
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus of real good/bad files, read in place. Missing under CI is an error."""
    root = _corpus_root()
    if not (root / "MANIFEST.tsv").is_file():
        message = f"corpus not found at {root} (set VLBEAM_CORPUS)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def vlbeam_cache(tmp_path_factory) -> Path:
    """One cache folder per test run for the tiny checkpoints (VLBEAM_CACHE), shared by the
    run's pytest-xdist workers (each builds under a lock, so a checkpoint is built once)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above the workers' own (xdist's recipe)
    cache = base / "vlbeam-cache"
    cache.mkdir(exist_ok=True)
    os.environ["VLBEAM_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_model(vlbeam_cache) -> Path:
    """Build the tiny random checkpoint once per session; `--model tiny-random` resolves to it."""
    from vlbeam.transforms.backends.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def sharp_model(tiny_model, vlbeam_cache) -> Path:
    """The tiny checkpoint with redrawn weights (tests/sharp_model.py), once per test run."""
    from tests.sharp_model import ensure_sharp_checkpoint

    return ensure_sharp_checkpoint(tiny_model, vlbeam_cache / "sharp-tiny-qwen3-vl")


@pytest.fixture(scope="session")
def tiny_qwen25_model(vlbeam_cache) -> Path:
    """The tiny random Qwen2.5-VL checkpoint, once per session (`tiny-random-qwen2.5-vl`)."""
    from vlbeam.transforms.backends.tiny_model import TINY_RANDOM_QWEN25, ensure_tiny_model

    return ensure_tiny_model(TINY_RANDOM_QWEN25)


def pytest_collection_modifyitems(config, items) -> None:
    """Slow tests (`@pytest.mark.slow`) first, the rest in their usual order: run on several
    workers (`-n`, pytest-xdist's default in pyproject.toml), the long ones start at once on
    every worker instead of one of them ending the suite alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
