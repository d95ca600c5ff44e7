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
    """One cache folder per session for the tiny checkpoints (VLBEAM_CACHE)."""
    cache = tmp_path_factory.mktemp("vlbeam-cache")
    os.environ["VLBEAM_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_model(vlbeam_cache) -> Path:
    """Build the tiny random checkpoint once per session; `--model tiny-random` resolves to it."""
    from vlbeam.transforms.backends.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tiny_qwen25_model(vlbeam_cache) -> Path:
    """The tiny random Qwen2.5-VL checkpoint, once per session (`tiny-random-qwen2.5-vl`)."""
    from vlbeam.transforms.backends.tiny_model import TINY_RANDOM_QWEN25, ensure_tiny_model

    return ensure_tiny_model(TINY_RANDOM_QWEN25)
