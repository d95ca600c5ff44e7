"""The OpenAI-compatible HTTP backend (hosted Qwen3-VL services and your own vLLM / SGLang /
`transformers serve`): an `InferenceBackend` whose engine is one `ApiEngine` per worker process
(event loop + connection pool), sending each request as soon as a concurrency slot frees up.
"""

from __future__ import annotations

from vlbeam.transforms.backends.openai_engine import ApiEngine
from vlbeam.transforms.backends.openai_protocol import ApiConfig, guided_mechanism

BACKEND = "openai"


class OpenAIApiHandler:
    backend = BACKEND

    def __init__(self, cfg: ApiConfig) -> None:
        self._cfg = cfg

    @property
    def provider(self) -> str:
        return self._cfg.provider

    @property
    def model_name(self) -> str:
        return self._cfg.model

    @property
    def guided(self) -> str:
        """--extract: the structured-output field the preset documents (or none)."""
        return guided_mechanism(self._cfg)

    def create_engine(self) -> ApiEngine:
        return ApiEngine(self._cfg)
