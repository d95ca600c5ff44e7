"""RunInference `ModelHandler` for OpenAI-compatible HTTP APIs (hosted Qwen3-VL services and
your own vLLM / SGLang / `transformers serve`).

`load_model` creates the per-process engine (event loop + connection pool), which RunInference
keeps for the life of the worker process and reuses across bundles. A batch is sent
concurrently (bounded by `max_concurrency`); each request's failure is its own result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from vlbeam.schemas.elements import VLRequest
from vlbeam.transforms.backends.openai_engine import ApiEngine
from vlbeam.transforms.backends.openai_protocol import ApiConfig

BACKEND = "openai"
# Default batch = this many times --max-concurrency: while the batch's last requests are still
# being sent, finished slots take the next ones, so the provider's concurrency stays saturated
# across the batch (a batch of exactly max_concurrency waits for its slowest request).
BATCH_PER_CONCURRENCY = 4


class OpenAIApiHandler(ModelHandler[VLRequest, PredictionResult, ApiEngine]):
    backend = BACKEND

    def __init__(
        self,
        cfg: ApiConfig,
        *,
        min_batch_size: int = 1,
        max_batch_size: int | None = None,
        max_batch_duration_secs: int | None = None,
    ) -> None:
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size or BATCH_PER_CONCURRENCY * cfg.max_concurrency,
            max_batch_duration_secs=max_batch_duration_secs,
        )
        self._cfg = cfg

    @property
    def provider(self) -> str:
        return self._cfg.provider

    @property
    def model_name(self) -> str:
        return self._cfg.model

    def load_model(self) -> ApiEngine:
        return ApiEngine(self._cfg)

    def run_inference(
        self,
        batch: Sequence[VLRequest],
        model: ApiEngine,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        results = model.infer(batch)
        return [PredictionResult(r, res) for r, res in zip(batch, results, strict=True)]

    def get_num_bytes(self, batch: Sequence[VLRequest]) -> int:
        return sum(request.num_bytes for request in batch)

    def get_metrics_namespace(self) -> str:
        return "vlbeam_openai"
