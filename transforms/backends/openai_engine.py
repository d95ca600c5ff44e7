"""The HTTP engine of the API backend: one aiohttp connection pool and event loop per worker
process, concurrent requests bounded by `max_concurrency`, an optional rate limit, and
retries with exponential backoff and jitter that honour `Retry-After`.

Transient errors (connection errors, timeouts, 408, 409, 429, 5xx, malformed or cut-off
responses) are retried up to `max_attempts`; 400/401/403/404/422 fail the request at once.
Failures are classified where they happen: a transport error (no HTTP status: a timeout, a
reset, a server that went away) is neither a success nor a rejection. After
`auth_failures_to_abort` authentication failures (401/403) in a row (only a success breaks the
row; whatever failed before doesn't matter), the engine stops sending and stops the job with
one clear message (`RunAborted`) instead of failing every element.

With a managed server (`--backend vllm|sglang`), a connection error or a timeout asks the server
to recover (restart if it died or no longer answers its health URL). A request in flight at a
crash is sent again without using an attempt, alone (nothing else in flight on that server, so
a second crash can only be its own); a request in flight at two crashes fails alone as
`ServerCrash`. A server that can't be brought back opens the engine's breaker: every request
of that engine then fails at once as `EngineUnavailable`.

`close()` cancels what is still pending (no call is sent after it). The API key is read from
the environment when the engine starts and is never put in a message, a log line or an
exception.
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
from collections.abc import Awaitable, Callable, Sequence
from email.utils import parsedate_to_datetime

from vlbeam.schemas.elements import VLRequest, VLResult
from vlbeam.schemas.errors import (
    ApiError,
    EngineUnavailable,
    MissingApiKey,
    PreflightFailed,
    RunAborted,
    ServerCrash,
    VlbeamError,
)
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


__all__ = ["ApiEngine", "RunAborted", "preflight"]  # RunAborted: from schemas.errors

# A request in flight at this many crashes of its server is taken to cause them.
CRASHES_TO_FAIL = 2


class _Retry(Exception):
    def __init__(
        self,
        message: str,
        status: int | None = None,
        after: float | None = None,
        connection: bool = False,
        timed_out: bool = False,
    ):
        super().__init__(message)
        self.status, self.after, self.connection = status, after, connection
        self.timed_out = timed_out


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
    """At most `per_minute` request starts per minute, evenly spaced. `clock` and `sleep`
    are injectable so that tests can check the schedule without measuring wall time."""

    def __init__(
        self,
        per_minute: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()
        self._clock, self._sleep = clock, sleep

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            await self._sleep(start - now)


class _Slots:
    """`max_concurrency` request slots; `exclusive()` takes them all, so a request suspected
    of crashing its server runs alone (one suspect at a time; the others wait their turn)."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._semaphore = asyncio.Semaphore(n)
        self._suspects = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def shared(self):
        async with self._semaphore:
            yield

    @contextlib.asynccontextmanager
    async def exclusive(self):
        async with self._suspects:
            taken = 0
            try:
                for _ in range(self._n):
                    await self._semaphore.acquire()
                    taken += 1
                yield
            finally:
                for _ in range(taken):
                    self._semaphore.release()


class ApiEngine:
    """Per-process client: a background event loop thread with one aiohttp session."""

    def __init__(self, cfg: ApiConfig, *, seed: int | None = None, server=None) -> None:
        """`server`: a managed inference server (`ManagedServer`) behind `cfg.base_url`: a
        connection error or a timeout then asks it to recover (see the module docstring)."""
        import aiohttp

        self.cfg = cfg
        self._server = server
        self._key = read_api_key(cfg)
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._auth_in_row = 0  # 401/403 since the last success
        self._aborted: str | None = None  # why the run must stop (nothing more is sent)
        self._broken: str | None = None  # the breaker: why this engine can't serve
        self._closed = False
        self._lock = threading.Lock()

        async def setup():
            connector = aiohttp.TCPConnector(limit=cfg.max_concurrency, ttl_dns_cache=300)
            timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            self._slots = _Slots(cfg.max_concurrency)
            self._limiter = _RateLimiter(cfg.requests_per_minute)

        asyncio.run_coroutine_threadsafe(setup(), self._loop).result()
        atexit.register(self.close)  # close the pool cleanly when the worker process exits

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **dict(self.cfg.headers)}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def close(self) -> None:
        """Cancel every pending request (nothing is sent after this), close the pool."""
        self._closed = True
        if self._loop.is_closed() or not self._thread.is_alive():
            return

        async def shutdown():
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self._session.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
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

    @property
    def broken(self) -> str | None:
        """Why the breaker is open (None: closed, the engine serves)."""
        return self._broken

    @property
    def stall_timeout_s(self) -> float:
        """The longest a request may take, every attempt and server restart included (no
        result at all for longer: the engine is stuck; see the stage)."""
        cfg = self.cfg
        bound = cfg.max_attempts * (cfg.timeout_s + cfg.backoff_max_s)
        if self._server is not None:
            spec = self._server.spec
            bound += (spec.max_restarts + 1) * spec.start_timeout_s
        return bound + 60

    def submit(self, request: VLRequest) -> concurrent.futures.Future[VLResult]:
        """Send one request as soon as a slot (and the rate limit) allows."""
        if self._closed:
            raise RuntimeError("engine is closed")
        return asyncio.run_coroutine_threadsafe(self._one(request), self._loop)

    def flush(self) -> None:
        return None  # nothing waits for company: every request goes out on its own

    def check(self) -> None:
        self._check_abort()

    def trip(self, reason: str) -> None:
        """Open the breaker from outside (e.g. the stage saw no result for too long)."""
        with self._lock:
            if self._broken is None:
                self._broken = reason
                logger.error("engine unavailable: %s", reason)

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
        except VlbeamError as exc:  # ServerCrash, EngineUnavailable: classified where raised
            return VLResult.failed(exc)
        except Exception as exc:  # a bug or an unexpected library error: fail this element
            return VLResult.failed(VlbeamError(self._clean(f"{type(exc).__name__}: {exc}")))
        self._count(200)
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
        """One request's outcome. Only an answer (200) proves the key; a transport error
        (None) or another status neither proves nor disproves it."""
        with self._lock:
            if status == 200:
                self._auth_in_row = 0
            elif status in AUTH_STATUS:
                self._auth_in_row += 1
                if self._auth_in_row >= self.cfg.auth_failures_to_abort and not self._aborted:
                    self._aborted = (
                        f"stopping: the API at {self.cfg.base_url} rejected every request "
                        f"({self._auth_in_row} authentication failures in a row, no success "
                        f"between them); check the key in ${self.cfg.api_key_env} and "
                        "--provider/--base-url"
                    )

    def _check_abort(self) -> None:
        with self._lock:
            aborted = self._aborted
        if aborted:
            raise RunAborted(aborted)

    def _refuse(self) -> None:
        """Before sending: nothing goes out once the run is stopping or the breaker is open."""
        if self._aborted:
            raise ApiError("not sent: the run is stopping (the API rejected every request)")
        if self._broken:
            raise EngineUnavailable(self._broken)
        if self._closed:
            raise EngineUnavailable("not sent: the engine was closed")

    async def _send(self, body: dict, *, stream: bool) -> ApiAnswer:
        last: _Retry | None = None
        attempt, crashes, crashed = 0, 0, False
        while attempt < self.cfg.max_attempts:
            self._refuse()
            attempt += 1
            if attempt > 1 and not crashed:
                delay = backoff_delay(attempt - 1, self.cfg, self._rng)
                if last is not None and last.after is not None:
                    delay = max(delay, min(last.after, self.cfg.backoff_max_s))
                await asyncio.sleep(delay)
                self._refuse()
            # a suspect (in flight at a crash) goes alone: a second crash is its own
            slot = self._slots.exclusive() if crashes else self._slots.shared()
            crashed = False
            async with slot:
                self._refuse()
                await self._limiter.wait()
                # sent only to a server that is up: a request sent while another one's
                # crash is being dealt with was not in flight at that crash
                restarts = await self._server_up()
                try:
                    return await self._attempt(body, stream)
                except _Retry as exc:
                    last = exc
                    logger.debug("attempt %d failed: %s", attempt, exc)
                    # recovered while the slot is held: a suspect waiting for the exclusive
                    # slot is never sent to the server this request just brought down (it
                    # would be in flight at that crash's restart and counted a second time)
                    crashed = bool(exc.connection or exc.timed_out) and await self._server_crashed(
                        restarts, hung=exc.timed_out
                    )
            if crashed:
                crashes += 1
                if crashes >= CRASHES_TO_FAIL:
                    raise ServerCrash(
                        f"the {self._server.label} server died {crashes} times while this "
                        "request was in flight (the last time with nothing else in "
                        "flight); it was not sent again"
                    ) from None
                attempt -= 1  # the server died under this request: it doesn't count
        assert last is not None
        raise ApiError(
            f"gave up after {self.cfg.max_attempts} attempts: {last}", status=last.status
        )

    async def _server_up(self) -> int:
        """Wait until the managed server (if any) is up; its restart count, to tell later
        whether it died under the request about to be sent."""
        server = self._server
        if server is None:
            return 0
        if not server.ready():
            try:
                await asyncio.get_running_loop().run_in_executor(None, server.ensure_running)
            except Exception as exc:
                self.trip(self._clean(f"the {server.label} server can't serve: {exc}"))
                raise EngineUnavailable(self._broken or "engine unavailable") from None
            self._follow(server)
        return server.restarts

    def _follow(self, server) -> None:
        """A restart may have moved the server to another port."""
        base_url = server.base_url
        if base_url.rstrip("/") != self.cfg.base_url.rstrip("/"):
            self.cfg = dataclasses.replace(self.cfg, base_url=base_url)

    async def _server_crashed(self, restarts_before: int, *, hung: bool) -> bool:
        """After a connection error or a timeout: have the managed server recover (restart if
        it died or hangs; blocking, so off the event loop). True when it was restarted since
        the failed attempt began. A server that can't be brought back opens the breaker."""
        if self._server is None:
            return False
        server = self._server
        try:
            restarted = await asyncio.get_running_loop().run_in_executor(
                None, lambda: server.recover(restarts_before, hung=hung)
            )
        except Exception as exc:  # restarts exhausted, or it won't come up: the breaker opens
            self.trip(self._clean(f"the {server.label} server can't serve: {exc}"))
            raise EngineUnavailable(self._broken or "engine unavailable") from None
        self._follow(server)
        return restarted

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
            raise _Retry(message, connection=not timed_out, timed_out=timed_out) from None
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
