"""A request whose attempt lost its connection to a managed server has the server recover
while it still holds its concurrency slot, so no other request is sent to the server it just
brought down. Seen under load before: the recovery ran after the slot was released, pages
sent meanwhile were in flight at that crash's restart, and innocent pages of the poison-page
test ended as ServerCrash."""

from __future__ import annotations

import io
import threading
import time

from PIL import Image

from tests.conftest import require_module

require_module("aiohttp", "openai")

from tests.fake_api_server import FakeApiServer, drop  # noqa: E402
from vlbeam.schemas.elements import VLRequest  # noqa: E402
from vlbeam.transforms.backends.openai_engine import ApiEngine  # noqa: E402
from vlbeam.transforms.backends.openai_protocol import ApiConfig  # noqa: E402

RESTART_S = 1.0  # how long the stand-in's restart takes: room for a wrongly sent request


class RestartingServer:
    """A stand-in for `ManagedServer`: always up, and `recover()` is a restart that takes
    `RESTART_S`, recording how many requests reached the HTTP server meanwhile."""

    label = "fake"

    def __init__(self, http: FakeApiServer) -> None:
        self.http = http
        self.base_url = http.base_url
        self.restarts = 0
        self.sent_during_restart: list[int] = []
        self._lock = threading.Lock()

    def ready(self) -> bool:
        return True

    def ensure_running(self) -> str:
        return self.base_url

    def recover(self, restarts_before: int, *, hung: bool = False) -> bool:
        with self._lock:
            before = len(self.http.requests)
            time.sleep(RESTART_S)
            self.sent_during_restart.append(len(self.http.requests) - before)
            self.restarts += 1
            return True


def request(prompt: str) -> VLRequest:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(buf, format="PNG")
    return VLRequest(images=(buf.getvalue(),), prompt=prompt)


def test_nothing_is_sent_while_a_crashed_requests_server_restarts():
    with FakeApiServer() as http:
        http.script(drop())  # the first request's connection dies under it
        server = RestartingServer(http)
        cfg = ApiConfig(provider="openai", base_url=http.base_url, model="m", api_key_env=None,
                        max_concurrency=1, backoff_base_s=0.01, max_attempts=3)  # fmt: skip
        engine = ApiEngine(cfg, server=server)
        try:
            results = engine.infer([request("first"), request("second")])
        finally:
            engine.close()
        sent = len(http.requests)
    assert [r.ok for r in results] == [True, True]
    assert server.sent_during_restart == [0]  # the other request waited for the slot
    assert sent == 3  # the dropped one, it again after the restart, the other one
