"""Everything one vlbeam job is set by, as config objects: `Settings`, built from the same
flag strings `vlbeam run` takes (`Settings.from_flags`) or given directly, and the backend it
names (`make_backend`). `vlbeam.Process` and `vlbeam run` both start from here."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from apache_beam.options.pipeline_options import PipelineOptions

from vlbeam.pipeline.job_config import JobConfig
from vlbeam.pipeline.options import (
    VlbeamOptions,
    api_config,
    apply_model_preset,
    extract_config,
    job_config,
    layout_config,
    model_config,
    page_policy,
    refuse_unknown_flags,
    render_config,
    server_api_config,
    server_spec,
    video_config,
)
from vlbeam.schemas.config import (
    ExtractConfig,
    LayoutConfig,
    ModelConfig,
    PagePolicy,
    RenderConfig,
)
from vlbeam.transforms.backends.engine import InferenceBackend
from vlbeam.transforms.backends.openai_protocol import ApiConfig, api_config_from_preset
from vlbeam.transforms.backends.server_spec import ServerSpec
from vlbeam.transforms.media.work_units import VideoConfig

API_BACKENDS = ("openai",)
SERVER_BACKENDS = ("vllm", "sglang")


@dataclass(frozen=True)
class Settings:
    """A job's settings: one config object per concern. `api` is required with
    `job.backend == "openai"`, `server` with `vllm`/`sglang` (`server_api`, how the engine
    talks to the servers, defaults to plain requests to `model.model`)."""

    job: JobConfig = field(default_factory=JobConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    policy: PagePolicy = field(default_factory=PagePolicy)
    video: VideoConfig = field(default_factory=VideoConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    api: ApiConfig | None = None
    server: ServerSpec | None = None
    server_api: ApiConfig | None = None

    def __post_init__(self) -> None:
        if self.job.backend in API_BACKENDS and self.api is None:
            raise ValueError("backend 'openai' needs api=ApiConfig(...) (or the --provider flags)")
        if self.job.backend in SERVER_BACKENDS and self.server is None:
            raise ValueError(f"backend {self.job.backend!r} needs server=ServerSpec(...)")
        if self.job.backend in SERVER_BACKENDS and self.server_api is None:
            default = api_config_from_preset(
                "openai", base_url="http://127.0.0.1/v1", model=self.model.model, api_key_env=""
            )
            object.__setattr__(self, "server_api", default)

    @classmethod
    def from_flags(cls, argv: Sequence[str]) -> Settings:
        """The settings `vlbeam run ARGV` would use (unknown flags are refused; Beam's own
        flags are allowed and ignored here: they belong to the pipeline's options)."""
        argv = list(argv)
        refuse_unknown_flags(argv)
        opts = PipelineOptions(argv).view_as(VlbeamOptions)
        apply_model_preset(opts, argv)  # --model-preset: the flags it covers, unless given
        return cls.from_options(opts)

    @classmethod
    def from_options(cls, opts: VlbeamOptions) -> Settings:
        backend = opts.backend
        if backend != "transformers" and opts.max_batch_size is not None:
            how = (
                "the API backend sends each request on its own, up to --max-concurrency at once"
                if backend in API_BACKENDS
                else f"a {backend} server batches continuously: bound it with --max-concurrency"
            )
            raise ValueError(f"--max-batch-size sets the batch of a local model; {how}")
        return cls(
            job=job_config(opts),
            model=model_config(opts),
            render=render_config(opts),
            policy=page_policy(opts),
            video=video_config(opts),
            layout=layout_config(opts),
            extract=extract_config(opts),
            api=api_config(opts) if backend in API_BACKENDS else None,
            server=server_spec(opts) if backend in SERVER_BACKENDS else None,
            server_api=server_api_config(opts) if backend in SERVER_BACKENDS else None,
        )

    def replace(self, **configs) -> Settings:
        return dataclasses.replace(self, **configs)


def make_backend(settings: Settings) -> InferenceBackend:
    """The backend the settings name, after the launcher-side checks that fail fast (the
    API key and endpoint, the local model's presence)."""
    backend = settings.job.backend
    if backend in API_BACKENDS:
        from vlbeam.transforms.backends.openai_engine import preflight
        from vlbeam.transforms.backends.openai_handler import OpenAIApiHandler

        if not settings.job.no_preflight:
            preflight(settings.api)
        return OpenAIApiHandler(settings.api)
    if backend in SERVER_BACKENDS:
        from vlbeam.transforms.backends.managed_handler import ManagedServerHandler

        return ManagedServerHandler(
            backend, settings.server, settings.server_api, settings.model.model
        )
    from vlbeam.transforms.backends.qwen_transformers import (
        TransformersQwenHandler,
        check_model_available,
    )

    check_model_available(settings.model.model)
    return TransformersQwenHandler(settings.model)
