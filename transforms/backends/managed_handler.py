"""`--backend vllm|sglang`: an inference server that the worker starts and manages.

`create_engine` (once per worker process: the engine is shared through
`transforms.engine_registry.acquire_engine`, and owns its servers) starts one server per GPU group
(data parallel; one spanning `--tensor-parallel-size` GPUs each) and returns an engine that
sends each request as a chat completion (images as data URIs, video frames with their true
`<t seconds>` times) to the server with the fewest requests outstanding. A server that dies (or
hangs) is restarted (at most `--max-server-restarts` per `--server-restart-window-s`) and the
requests that were in flight are retried alone, so no element is lost or duplicated; one in
flight at two crashes fails alone (`ServerCrash`), and a server that won't stay up opens the
breaker (`EngineUnavailable`; see `openai_engine`). Servers stop when the engine closes (see
`transforms.inference`), at exit (atexit), and through a watchdog if the worker is killed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import Future

from vlbeam.schemas.elements import VLRequest, VLResult
from vlbeam.transforms.backends.gpu_groups import group_specs
from vlbeam.transforms.backends.managed_server import ManagedServer, start_servers
from vlbeam.transforms.backends.openai_engine import ApiEngine
from vlbeam.transforms.backends.openai_protocol import ApiConfig, guided_mechanism
from vlbeam.transforms.backends.server_spec import ServerSpec

logger = logging.getLogger(__name__)


class SpreadEngine:
    """Several engines (one per server) behind one: each request goes to the one with the
    fewest outstanding. Closing it stops the servers."""

    def __init__(
        self, engines: list[ApiEngine], servers: list[ManagedServer] | None = None
    ) -> None:
        if not engines:
            raise ValueError("need at least one engine")
        self._engines = engines
        self._servers = servers or []
        self._outstanding = [0] * len(engines)
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return sum(engine.capacity for engine in self._engines)

    @property
    def broken(self) -> str | None:
        """Why no server can serve (None while one still can)."""
        reasons = [engine.broken for engine in self._engines]
        return None if None in reasons else "; ".join(dict.fromkeys(reasons))

    @property
    def stall_timeout_s(self) -> float:
        return max(engine.stall_timeout_s for engine in self._engines)

    def submit(self, request: VLRequest) -> Future[VLResult]:
        """To the serving engine with the fewest outstanding (a broken one only when every
        one is: it fails the request at once)."""
        with self._lock:
            serving = [i for i, e in enumerate(self._engines) if e.broken is None]
            i = min(serving or range(len(self._engines)), key=self._outstanding.__getitem__)
            self._outstanding[i] += 1
        future = self._engines[i].submit(request)
        future.add_done_callback(lambda _f: self._done(i))
        return future

    def _done(self, i: int) -> None:
        with self._lock:
            self._outstanding[i] -= 1

    def flush(self) -> None:
        return None

    def check(self) -> None:
        for engine in self._engines:
            engine.check()

    def trip(self, reason: str) -> None:
        for engine in self._engines:
            engine.trip(reason)

    def close(self) -> None:
        """Close the clients and stop the servers (nothing left holding a GPU)."""
        for engine in self._engines:
            engine.close()
        for server in self._servers:
            server.stop()


class ManagedServerHandler:
    """An `InferenceBackend` for vLLM / SGLang (or any OpenAI-compatible server command)."""

    def __init__(self, backend: str, spec: ServerSpec, api: ApiConfig, model: str) -> None:
        self.backend = backend
        self._spec = spec
        self._api = api
        self._model = model  # as the user named it (provenance); spec.model may be a path

    @property
    def provider(self) -> str | None:
        return None

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def guided(self) -> str:
        """--extract: vLLM and SGLang both constrain a chat `response_format` json_schema."""
        return guided_mechanism(self._api)

    def create_engine(self) -> SpreadEngine:
        servers = start_servers(group_specs(self._spec))
        logger.info(
            "%d %s server(s) ready: %s",
            len(servers),
            self.backend,
            ", ".join(server.base_url for server in servers),
        )
        engines = [
            ApiEngine(
                dataclasses.replace(
                    self._api, base_url=server.base_url, model=self._spec.model_name
                ),
                server=server,
            )
            for server in servers
        ]
        return SpreadEngine(engines, servers)
