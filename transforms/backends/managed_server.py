"""An OpenAI-compatible inference server (vLLM, SGLang, or any command) run by vlbeam as a
child process of a worker process, for `--backend vllm|sglang` and `--server-command`: the
process and its watchdog. What to run is `server_spec.ServerSpec`; how GPUs are split between
servers is `gpu_groups`.

Pure Python, `subprocess` and psutil: no Beam, no HTTP client beyond `urllib` for the health
check.

- `ManagedServer`: start on a free port in its own process group, forward its output to this
  module's logger with a prefix (keeping the last lines for error messages), wait until the
  health URL answers 200 (failing fast with the last log lines if the process exits, and within
  `start_timeout_s` if it never answers), restart it (bounded) when it died, and stop it and
  everything it started (SIGTERM to the group, then SIGKILL), idempotently, at `stop()`, at
  interpreter exit, and, through a small watchdog process, even when the worker process is
  killed outright.
- `start_servers(specs)`: several servers (one per GPU group) loading at once, ready when
  returned. Who owns them: the engine that talks to them (`managed_handler`), itself one per
  worker process (`transforms.engine_registry.acquire_engine`, the one registry); this module only
  keeps the set of servers whose process runs, to stop them at exit.

Over 500 lines because it is one class's life cycle (one lock serialises start, readiness,
restart and stop) and the OS process helpers only it uses; split, one lock's protocol would
be spread over files.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import http.client
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence

import psutil

from vlbeam.schemas.redaction import redact_command
from vlbeam.transforms.backends.server_spec import ServerSpec, server_command

logger = logging.getLogger(__name__)

_ACCESS_LOG = re.compile(r'"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) \S+ HTTP/[\d.]+" \d{3}')


class ServerError(RuntimeError):
    """A managed server could not be started, or died and could not be brought back."""


class ServerStartError(ServerError):
    """The server exited before it was ready, or never answered its health URL in time."""


class ServerRestartsExhausted(ServerError):
    """The server died more often than `max_restarts` allows."""


@dataclasses.dataclass(frozen=True)
class ProcessTunables:
    """How a server process is run and watched, apart from what it is (`ServerSpec`): no
    flag sets these; tests and benches do. `host`/`port`: where it listens (port None: a free
    port, chosen at each start); `health_path`: the URL that answers 200 once it is ready;
    `stop_timeout_s`: SIGTERM to SIGKILL; `log_lines`: lines kept for error messages; `name`:
    the log prefix (default: the spec's kind); `health_timeout_s`: how long the health URL
    may take to answer when a request timed out (longer: the server is taken to hang)."""

    host: str = "127.0.0.1"
    port: int | None = None
    health_path: str = "/v1/models"
    stop_timeout_s: float = 30.0
    log_lines: int = 200
    name: str | None = None
    health_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.health_timeout_s <= 0:
            raise ValueError("health_timeout_s must be > 0")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"port must be within 1..65535, got {self.port}")
        if not self.health_path.startswith("/"):
            raise ValueError(f"health_path must start with '/', got {self.health_path!r}")
        if self.stop_timeout_s <= 0:
            raise ValueError("stop_timeout_s must be > 0")
        if self.log_lines < 1:
            raise ValueError("log_lines must be >= 1")


def _shown(argv: Sequence[str] | None) -> str:
    return shlex.join(redact_command(argv or []))


# ---------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (empty when it is gone)."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def _group_alive(pgid: int) -> bool:
    """A process of the group still runs (zombies awaiting their reaper do not count: an init
    that reaps slowly, or not at all, must not hold up a stop)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] not in _GONE:
                return True
        except OSError:
            continue
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in _GONE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


# The watchdog outlives the worker process: it blocks reading a pipe only the worker holds, and
# when that pipe closes (the worker exited, however it died) it stops the server's process group.
_WATCHDOG = r"""
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
try:
    sys.stdin.buffer.read()
except BaseException:
    pass
for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        sys.exit(0)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            sys.exit(0)
        time.sleep(0.1)
"""


class ManagedServer:
    """One server process (and everything it starts) owned by this worker process.

    Thread-safe: `start`, `wait_ready`, `restart`, `ensure_running` and `stop` serialise on one
    lock, so concurrent requests that all notice a dead server cause one restart; `stop`
    interrupts a wait for readiness.

    The watchdog fires when every copy of its pipe's write end is closed: this process's, and
    those of processes forked from it without exec (they inherit it), so a server outlives a
    SIGKILLed worker only as long as such forks of it live.
    """

    def __init__(self, spec: ServerSpec, tunables: ProcessTunables | None = None) -> None:
        self.spec = spec
        self.tunables = tunables or ProcessTunables()
        self.label = self.tunables.name or spec.kind  # the log prefix and the name in errors
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._watchdog: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=self.tunables.log_lines)
        self._port: int | None = None
        self._command: list[str] | None = None
        self._ready = False
        self._stopped = False
        self._stopping = threading.Event()  # lets stop() interrupt a wait for readiness
        self._owner = os.getpid()
        self.starts = 0
        self.restarts = 0  # over the server's life: callers compare it to see a restart
        self._restart_times: collections.deque[float] = collections.deque()  # in the window

    # -- what callers read --------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def command(self) -> list[str] | None:
        return list(self._command) if self._command else None

    @property
    def base_url(self) -> str:
        """`http://host:port/v1`, the base URL for the OpenAI-compatible engine (it changes if
        a restart had to take another port: read it again after `ensure_running`)."""
        if self._port is None:
            raise ServerError(f"{self.label} server is not started")
        return f"http://{_url_host(_connect_host(self.tunables.host))}:{self._port}/v1"

    @property
    def health_url(self) -> str:
        if self._port is None:
            raise ServerError(f"{self.label} server is not started")
        host = _url_host(_connect_host(self.tunables.host))
        return f"http://{host}:{self._port}{self.tunables.health_path}"

    @property
    def prefix(self) -> str:
        return f"[{self.label} :{self._port}]"

    def alive(self) -> bool:
        """The server process is running (it may still be loading: see `wait_ready`)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def ready(self) -> bool:
        return self._ready and self.alive()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self._lines)[-lines:])

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ManagedServer:
        """Start the process (without waiting for it to be ready); a no-op when running."""
        with self._lock:
            if self.alive():
                return self
            self._stopped = False
            self._stopping.clear()
            self._launch()
            return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Poll the health URL until it answers 200. Raises `ServerStartError` with the last
        log lines if the process exits first, or if it does not answer within the timeout
        (then the process is stopped)."""
        timeout_s = self.spec.start_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            proc = self._proc
            if proc is None:
                raise ServerError(f"{self.label} server is not started")
            started = time.monotonic()
            deadline = started + timeout_s
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            pause = 0.1
            while True:
                if self._stopping.is_set():
                    raise ServerError(f"{self.label} server was stopped while starting")
                code = proc.poll()
                if code is not None:
                    self._drain()
                    self._ready = False
                    raise ServerStartError(
                        f"{self.label} server exited with code {code} before it answered "
                        f"{self.tunables.health_path} (command: {_shown(self._command)}). "
                        f"Last lines of its log:\n{self.log_tail()}"
                    )
                remaining = deadline - time.monotonic()
                if self._probe(opener, min(5.0, max(0.2, remaining))):
                    self._ready = True
                    logger.info(
                        "%s ready at %s after %.1f s",
                        self.prefix,
                        self.base_url,
                        time.monotonic() - started,
                    )
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._terminate()
                    raise ServerStartError(
                        f"{self.label} server did not answer {self.tunables.health_path} with "
                        f"200 within {timeout_s:g} s (--server-start-timeout-s); it was stopped. "
                        f"Command: {_shown(self._command)}. "
                        f"Last lines of its log:\n{self.log_tail()}"
                    )
                time.sleep(min(pause, remaining))
                pause = min(1.0, pause * 1.5)

    def start_and_wait(self) -> ManagedServer:
        with self._lock:
            self.start()
            if not self._ready:
                self.wait_ready()
            return self

    def restart(self) -> None:
        """Stop what is left of the server and start it again, waiting until it is ready.
        Each attempt counts against `max_restarts`; past it, `ServerRestartsExhausted`."""
        with self._lock:
            last: BaseException | None = None
            while True:
                if self._stopping.is_set():
                    raise ServerError(f"{self.label} server was stopped")
                now = time.monotonic()
                window = self.spec.restart_window_s
                while self._restart_times and now - self._restart_times[0] > window:
                    self._restart_times.popleft()  # restarts older than the window are forgiven
                if len(self._restart_times) >= self.spec.max_restarts:
                    why = f" The last attempt: {last}" if last else ""
                    raise ServerRestartsExhausted(
                        f"{self.label} server died and was restarted {len(self._restart_times)} "
                        f"times within {window:g} s (--max-server-restarts "
                        f"{self.spec.max_restarts}, --server-restart-window-s {window:g}); "
                        f"giving up.{why}\nLast lines of its log:\n{self.log_tail()}"
                    )
                self.restarts += 1
                self._restart_times.append(now)
                code = self._proc.poll() if self._proc else None
                logger.warning(
                    "%s restarting (exit code %s), %d of %d within %g s",
                    self.prefix,
                    code,
                    len(self._restart_times),
                    self.spec.max_restarts,
                    window,
                )
                self._terminate()
                try:
                    self._launch()
                    self.wait_ready()
                    return
                except ServerStartError as exc:
                    last = exc

    def ensure_running(self) -> str:
        """Make sure the server is up: start it the first time, restart it if it died.
        Returns the (current) base URL. Safe to call from many threads at once."""
        with self._lock:
            if self._stopped and self.starts:
                raise ServerError(f"{self.label} server was stopped")
            if self.starts == 0:
                self.start_and_wait()
            elif not self.alive():
                self.restart()
            elif not self._ready:
                self.wait_ready()
            return self.base_url

    def healthy(self, timeout_s: float | None = None) -> bool:
        """The process runs and its health URL answers 200 within `timeout_s` (default
        `health_timeout_s`)."""
        if not self.alive() or self._port is None:
            return False
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return self._probe(opener, timeout_s or self.tunables.health_timeout_s)

    def recover(self, restarts_before: int, *, hung: bool = False) -> bool:
        """After a request failed (a connection error, or with `hung` a timeout): restart the
        server if it died, or if it no longer answers its health URL (it hangs, or it is dying
        and its exit can't be seen yet). True when it was restarted since `restarts_before`
        (by this call or another thread's: the request was in flight at a crash). Raises
        `ServerError` when it can't be brought back."""
        with self._lock:
            if self._stopped and self.starts:
                raise ServerError(f"{self.label} server was stopped")
            if self.restarts > restarts_before:
                return True
            # alive and answering: the request's own bad luck, not a crash. A connection error
            # from a server that is alive but doesn't answer is one dying (its sockets close
            # before its exit can be seen) or hanging: seen under load, a crashing server
            # still counted as alive, and its poison request was retried as if nothing died
            if self.alive() and self.healthy():
                return False
            if self.alive():
                logger.warning(
                    "%s did not answer %s within %g s after a %s: restarting",
                    self.prefix,
                    self.tunables.health_path,
                    self.tunables.health_timeout_s,
                    "timeout (taken to hang)" if hung else "connection error",
                )
            self.restart()
            return True

    def stop(self) -> None:
        """Stop the server and everything it started: SIGTERM to its process group, SIGKILL
        after `stop_timeout_s`. Idempotent; does nothing in a forked child of the owner."""
        if os.getpid() != self._owner:
            return
        self._stopping.set()  # a thread waiting for readiness gives up the lock within a second
        with self._lock:
            self._stopped = True
            self._terminate()

    def __enter__(self) -> ManagedServer:
        return self.start_and_wait()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _choose_port(self) -> int:
        host, port = self.tunables.host or "127.0.0.1", self.tunables.port
        if port is not None:
            return port
        if self._port is not None and _port_is_free(host, self._port):
            return self._port  # keep the base URL stable across restarts when possible
        return free_port(host)

    def _resolve_python(self) -> str | None:
        spec = self.spec
        if spec.server_python or spec.kind != "sglang":
            return spec.server_python
        script = shutil.which("sglang")
        if script:
            with contextlib.suppress(OSError, UnicodeDecodeError), open(script, "rb") as handle:
                first = handle.readline().decode().strip()
                if first.startswith("#!") and "python" in first:
                    return first[2:].strip().split()[0]
        return shutil.which("python3") or "python3"

    def _launch(self) -> None:
        spec = self.spec
        port = self._choose_port()
        command = server_command(spec, self.tunables.host, port, python=self._resolve_python())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(spec.env)}
        if spec.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpu_ids)
        self._port, self._command, self._ready = port, command, False
        self._lines.clear()
        logger.info("%s starting: %s", self.prefix, _shown(command))
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        except OSError as exc:
            hint = ""
            if spec.kind in ("vllm", "sglang") and not spec.command_template:
                hint = (
                    f" Install {spec.kind} (it needs its own environment) and pass "
                    f"--server-python /path/to/that/env/bin/python."
                )
            raise ServerStartError(
                f"could not start the {self.label} server ({_shown(command)}): {exc}.{hint}"
            ) from None
        self._proc = proc
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        self.starts += 1
        self._reader = threading.Thread(
            target=self._forward, args=(proc,), name=f"vlbeam-server-log-{port}", daemon=True
        )
        self._reader.start()
        self._watchdog = self._start_watchdog(proc.pid)

    def _start_watchdog(self, pgid: int) -> subprocess.Popen | None:
        try:
            return subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(pgid), str(self.tunables.stop_timeout_s)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not in the group it kills
            )
        except OSError as exc:  # the server still stops at stop() and at exit
            logger.warning("%s no watchdog (%s)", self.prefix, exc)
            return None

    def _forward(self, proc: subprocess.Popen) -> None:
        prefix = self.prefix
        stream = proc.stdout
        if stream is None:
            return
        with contextlib.suppress(ValueError, OSError):
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                line = text.rsplit("\r", 1)[-1]  # progress bars: keep the last state
                if not line.strip():
                    continue
                self._lines.append(line)
                # one access-log line per request would flood the worker's log
                level = logging.DEBUG if _ACCESS_LOG.search(line) else logging.INFO
                logger.log(level, "%s %s", prefix, line)

    def _drain(self) -> None:
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)

    def _probe(self, opener, timeout: float) -> bool:
        try:
            with opener.open(self.health_url, timeout=timeout) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError):
            return False

    def _terminate(self) -> None:
        proc, watchdog = self._proc, self._watchdog
        self._ready = False
        if watchdog is not None:
            with contextlib.suppress(OSError):
                watchdog.kill()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                watchdog.wait(timeout=5)
            with contextlib.suppress(OSError):
                if watchdog.stdin:
                    watchdog.stdin.close()
            self._watchdog = None
        if proc is None:
            return
        pgid = proc.pid
        tree = descendants(pgid) if proc.poll() is None else []
        if proc.poll() is None or _group_alive(pgid):
            logger.info("%s stopping", self.prefix)
            _signal_group(pgid, signal.SIGTERM)
            for pid in tree:  # children that left the group
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.tunables.stop_timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None and not _group_alive(pgid):
                    break
                time.sleep(0.1)
            _signal_group(pgid, signal.SIGKILL)
            for pid in tree:
                if _pid_alive(pid):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self._drain()
        with contextlib.suppress(OSError):
            if proc.stdout:
                proc.stdout.close()
        self._proc = None
        with _RUNNING_LOCK:
            _RUNNING.discard(self)


def start_servers(
    specs: Iterable[ServerSpec], tunables: ProcessTunables | None = None
) -> list[ManagedServer]:
    """One server per spec, all loading at once, each ready when returned. If one fails to
    start, the others are stopped before the error is raised."""
    servers = [ManagedServer(spec, tunables) for spec in specs]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.ensure_running()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


# ---------------------------------------------------------------- stopped at exit

_RUNNING: set[ManagedServer] = set()  # servers of this process whose process was started
_RUNNING_LOCK = threading.Lock()


def stop_all() -> None:
    """Stop every server this process started and has not stopped (registered with atexit)."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for server in running:
        with contextlib.suppress(Exception):
            server.stop()


def _forget_in_child() -> None:  # a forked child owns none of its parent's servers
    global _RUNNING_LOCK
    _RUNNING.clear()
    _RUNNING_LOCK = threading.Lock()


atexit.register(stop_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
