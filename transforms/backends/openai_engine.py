"""The HTTP engine of the API backend: one aiohttp connection pool and event loop per worker
process, concurrent requests bounded by `max_concurrency`, an optional rate limit, and
retries with exponential backoff and jitter that honour `Retry-After`.

Transient errors (connection errors, timeouts, 408, 409, 429, 5xx, malformed or cut-off
responses) are retried up to `max_attempts`; 400/401/403/404/422 fail the request at once.
After `auth_failures_to_abort` authentication failures (401/403) with no success at all, the
engine stops the job with one clear message (`RunAborted`) instead of failing every element.
The API key is read from the environment when the engine starts and is never put in a
message, a log line or an exception.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime

from vlbeam.schemas.elements import VLRequest, VLResult
from vlbeam.schemas.errors import ApiError, MissingApiKey, PreflightFailed, VlbeamError
from vlbeam.schemas.redaction import redact
from vlbeam.transforms.backends.openai_protocol import (
    ApiAnswer,
    ApiConfig,
    StreamAccumulator,
    build_body,
    http_error_message,
    parse_response,
)

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({400, 401, 403, 404, 405, 413, 422})
AUTH_STATUS = frozenset({401, 403})


class RunAborted(BaseException):
    """Stops the whole job (deliberately not an Exception, so dead-letter handlers don't
    turn it into one failure row per element)."""


class _Retry(Exception):
    def __init__(
        self,
        message: str,
        status: int | None = None,
        after: float | None = None,
        connection: bool = False,
    ):
        super().__init__(message)
        self.status, self.after, self.connection = status, after, connection


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))


def backoff_delay(attempt: int, cfg: ApiConfig, rng: random.Random) -> float:
    """Full-jitter exponential backoff for retry number `attempt` (1-based)."""
    cap = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
    return rng.uniform(cap / 2, cap)


def read_api_key(cfg: ApiConfig) -> str | None:
    if not cfg.api_key_env:
        return None
    key = (os.environ.get(cfg.api_key_env) or "").strip()  # secrets mounted from files end in \n
    if key and any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise MissingApiKey(
            f"environment variable {cfg.api_key_env} holds control characters; it must hold "
            "just the API key"
        )
    if not key:
        raise MissingApiKey(
            f"environment variable {cfg.api_key_env} is not set; it must hold the API key for "
            f"--provider {cfg.provider} (or pass --api-key-env '' for a server without a key)"
        )
    return key


class _RateLimiter:
    """At most `per_minute` request starts per minute, evenly spaced."""

    def __init__(self, per_minute: float | None) -> None:
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


class ApiEngine:
    """Per-process client: a background event loop thread with one aiohttp session."""

    def __init__(self, cfg: ApiConfig, *, seed: int | None = None, server=None) -> None:
        """`server`: a managed inference server (`ManagedServer`) behind `cfg.base_url`. A
        connection error then asks it to restart if it died, and a request retried because
        of a restart doesn't use up one of its `max_attempts`."""
        import aiohttp

        self.cfg = cfg
        self._server = server
        self._key = read_api_key(cfg)
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._auth_failures = 0
        self._successes = 0
        self._lock = threading.Lock()

        async def setup():
            connector = aiohttp.TCPConnector(limit=cfg.max_concurrency, ttl_dns_cache=300)
            timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            self._semaphore = asyncio.Semaphore(cfg.max_concurrency)
            self._limiter = _RateLimiter(cfg.requests_per_minute)

        asyncio.run_coroutine_threadsafe(setup(), self._loop).result()
        atexit.register(self.close)  # close the pool cleanly when the worker process exits

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **dict(self.cfg.headers)}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def close(self) -> None:
        if self._loop.is_closed() or not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __del__(self) -> None:  # best effort; engines normally live as long as the process
        with contextlib.suppress(Exception):
            self.close()

    # -- the Engine interface (see engine.py) -------------------------------------------

    @property
    def capacity(self) -> int:
        """Requests a caller may keep outstanding: every slot busy, and as many again queued
        so that a freed slot takes the next request at once."""
        return 2 * self.cfg.max_concurrency

    def submit(self, request: VLRequest) -> concurrent.futures.Future[VLResult]:
        """Send one request as soon as a slot (and the rate limit) allows."""
        return asyncio.run_coroutine_threadsafe(self._one(request), self._loop)

    def flush(self) -> None:
        return None  # nothing waits for company: every request goes out on its own

    def check(self) -> None:
        self._check_abort()

    # -- public, synchronous ------------------------------------------------------------

    def infer(self, batch: Sequence[VLRequest]) -> list[VLResult]:
        """Send every request of the batch concurrently; one result per request, in order."""
        results = [future.result() for future in [self.submit(r) for r in batch]]
        self._check_abort()
        return results

    def preflight(self, body: dict) -> ApiAnswer:
        """One request outside any batch, e.g. to check the key before a run."""
        return asyncio.run_coroutine_threadsafe(self._send(body, stream=False), self._loop).result()

    # -- internals ----------------------------------------------------------------------

    async def _one(self, request: VLRequest) -> VLResult:
        started = time.perf_counter()
        try:
            body = build_body(self.cfg, request)
            answer = await self._send(body, stream=self.cfg.stream)
        except ApiError as exc:
            self._count(exc.status)
            return VLResult.failed(exc)
        except Exception as exc:  # a bug or an unexpected library error: fail this element
            return VLResult.failed(VlbeamError(self._clean(f"{type(exc).__name__}: {exc}")))
        self._count(None)
        return VLResult(
            text=answer.text,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            finish_reason=answer.finish_reason,
            latency_s=time.perf_counter() - started,
            reasoning=answer.reasoning,
            served_model=answer.served_model,
            request_id=answer.request_id,
            cost_usd=self.cfg.cost_usd(answer.input_tokens, answer.output_tokens),
        )

    def _count(self, status: int | None) -> None:
        with self._lock:
            if status in AUTH_STATUS:
                self._auth_failures += 1
            elif status is None:
                self._successes += 1

    def _check_abort(self) -> None:
        with self._lock:
            dead = self._successes == 0 and self._auth_failures >= self.cfg.auth_failures_to_abort
        if dead:
            raise RunAborted(
                f"stopping: the API at {self.cfg.base_url} rejected every request "
                f"({self._auth_failures} authentication failures, no success); check the key in "
                f"${self.cfg.api_key_env} and --provider/--base-url"
            )

    async def _send(self, body: dict, *, stream: bool) -> ApiAnswer:
        last: _Retry | None = None
        attempt, restarted = 0, False
        while attempt < self.cfg.max_attempts:
            attempt += 1
            if attempt > 1 and not restarted:
                delay = backoff_delay(attempt - 1, self.cfg, self._rng)
                if last is not None and last.after is not None:
                    delay = max(delay, min(last.after, self.cfg.backoff_max_s))
                await asyncio.sleep(delay)
            restarts = self._server.restarts if self._server is not None else 0
            try:
                async with self._semaphore:
                    await self._limiter.wait()
                    return await self._attempt(body, stream)
            except _Retry as exc:
                last = exc
                logger.debug("attempt %d failed: %s", attempt, exc)
                restarted = exc.connection and await self._server_came_back(restarts)
                if restarted:
                    attempt -= 1  # the server died under this request: it doesn't count
        assert last is not None
        raise ApiError(
            f"gave up after {self.cfg.max_attempts} attempts: {last}", status=last.status
        )

    async def _server_came_back(self, restarts_before: int) -> bool:
        """After a connection error: have the managed server restarted if it died (blocking,
        so off the event loop). True when it was restarted since the failed attempt began."""
        if self._server is None:
            return False
        try:
            base_url = await asyncio.get_running_loop().run_in_executor(
                None, self._server.ensure_running
            )
        except Exception as exc:  # restarts exhausted, or it won't come up: fail the request
            raise ApiError(self._clean(f"inference server unavailable: {exc}")) from None
        if base_url.rstrip("/") != self.cfg.base_url.rstrip("/"):
            self.cfg = dataclasses.replace(self.cfg, base_url=base_url)
        return self._server.restarts > restarts_before

    async def _attempt(self, body: dict, stream: bool) -> ApiAnswer:
        import aiohttp

        try:
            async with self._session.post(
                self.cfg.endpoint(), json=body, headers=self.headers()
            ) as response:
                request_id = response.headers.get("x-request-id") or response.headers.get(
                    "request-id"
                )
                if response.status >= 400:
                    raw = await response.read()
                    message = self._clean(http_error_message(response.status, raw))
                    if response.status in RETRY_STATUS or response.status >= 500:
                        after = retry_after_seconds(response.headers.get("Retry-After"))
                        raise _Retry(message, response.status, after)
                    raise ApiError(message, response.status)
                is_json = response.content_type == "application/json"
                if stream and not is_json:  # a server that ignores `stream` answers plain JSON
                    acc = StreamAccumulator()
                    async for raw_line in response.content:
                        acc.feed_line(raw_line.decode("utf-8", "replace"))
                        if acc.done:
                            break
                    if not acc.done and acc.finish_reason is None:
                        raise _Retry("stream ended before [DONE]")
                    return acc.answer(request_id)
                payload = await response.json(content_type=None)
                if not isinstance(payload, dict):
                    raise _Retry("response is not a JSON object")
                if "error" in payload and not payload.get("choices"):
                    raise _Retry(
                        self._clean(http_error_message(response.status, json.dumps(payload)))
                    )
                return parse_response(payload, request_id)
        except (_Retry, ApiError):
            raise
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            timed_out = isinstance(exc, asyncio.TimeoutError)
            kind = "timed out" if timed_out else "connection error"
            message = self._clean(f"{kind}: {type(exc).__name__}: {exc}")
            raise _Retry(message, connection=not timed_out) from None
        except ValueError as exc:  # malformed JSON, a broken stream chunk
            raise _Retry(self._clean(f"malformed response: {exc}")) from None

    def _clean(self, text: str) -> str:
        return redact(text, [self._key or ""])


def preflight(cfg: ApiConfig) -> None:
    """Before a run: one tiny request that proves the key and the endpoint work. A rejected
    key or a wrong URL/model stops the run here with the provider's message; a transient
    failure only warns (the run's own retries will deal with it)."""
    from vlbeam.transforms.backends.openai_protocol import preflight_request

    engine = ApiEngine(dataclasses.replace(cfg, max_attempts=min(cfg.max_attempts, 2)))
    try:
        engine.preflight(preflight_request(cfg))
    except ApiError as exc:
        if exc.status in FATAL_STATUS:
            raise PreflightFailed(f"the API check before the run failed: {exc}") from None
        logger.warning("API check before the run failed (continuing): %s", exc)
    finally:
        engine.close()
