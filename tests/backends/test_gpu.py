"""GPU path (off by default; run with `-m gpu` on a machine with an NVIDIA GPU)."""

from __future__ import annotations

import pytest

from tests.pipeline_helpers import SAMPLES_GLOB, read_table, run_job


@pytest.mark.gpu
def test_tiny_model_runs_on_cuda_in_bfloat16(tiny_model, tmp_path):
    import torch

    from vlbeam.schemas.config import ModelConfig
    from vlbeam.transforms.backends.qwen_transformers import load_qwen

    assert torch.cuda.is_available()
    loaded = load_qwen(ModelConfig(model=str(tiny_model)))
    assert loaded.device == "cuda" and loaded.model.dtype == torch.bfloat16
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB], out, f"--model={tiny_model}", "--max-new-tokens=8")
    pages = read_table(out, "pages")
    assert len(pages) == 2 and {p["output_tokens"] for p in pages} == {8}
