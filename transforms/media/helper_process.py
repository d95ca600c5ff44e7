"""A helper process that renders pages, so hostile files can't hang or crash a Beam worker.

The Beam worker (parent) talks to one long-lived child (`python -m
vlbeam.transforms.media.helper_process`) over pipes: length-prefixed pickles. The child
keeps the current document open across pages. Every call has a time bound; a
child that runs past it, or dies (for example on its address-space limit), is
killed and replaced, and the call raises `RenderTimeout` / `RendererCrashed`.
Only encoded image bytes come back, never arrays.

The helper dies with its parent and takes its own children (`pdftoppm`) with it: it runs in
its own process group (killed as a whole on a timeout or at close), and it asks the kernel for
a parent-death signal (Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)`), as do the processes it
starts. That is one libc call: made through ctypes, since no maintained library wraps just it
(python-prctl needs a compiler and libcap headers for this one constant). The signal follows
the *thread* that started the process, so helpers are started from one long-lived thread
(`_spawn`), never from a Beam thread that may be reaped while its helper works.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.errors import RemoteError, RendererCrashed, RenderTimeout, VlbeamError

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")
# Opening a document or counting its pages must not take longer than this.
OPEN_TIMEOUT_S = 60.0


def _write_msg(fd: int, obj) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    for part in (_HEADER.pack(len(payload)), payload):  # no concatenated copy
        data = memoryview(part)
        while data:
            n = os.write(fd, data)
            data = data[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, remaining = [], n
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_msg(fd: int, deadline: float | None = None):
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent (thread) exits. False
    where that can't be done (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


_SPAWNER: concurrent.futures.ThreadPoolExecutor | None = None
_SPAWNER_PID: int | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawn(argv: list[str], **kwargs) -> subprocess.Popen:
    """Popen from this process's one spawning thread (lives as long as the process), so a
    helper's parent-death signal fires when the process dies, not when a worker thread
    that happened to start it is reaped."""
    global _SPAWNER, _SPAWNER_PID
    with _SPAWNER_LOCK:
        if _SPAWNER is None or os.getpid() != _SPAWNER_PID:
            _SPAWNER = concurrent.futures.ThreadPoolExecutor(1, "vlbeam-helper-spawner")
            _SPAWNER_PID = os.getpid()
        spawner = _SPAWNER
    return spawner.submit(subprocess.Popen, argv, **kwargs).result()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class HelperProcess:
    """Parent-side handle on the helper process (one per DoFn instance)."""

    def __init__(self, max_memory_mb: int = 4096, decode_threads: int = 0) -> None:
        """`decode_threads`: the video decoder's threads in the helper (0 = FFmpeg's choice,
        about one per core; a pool of N helpers on C cores gives each C // N)."""
        if decode_threads < 0:
            raise ValueError("decode threads must be >= 0 (0 = FFmpeg's choice)")
        self._max_memory_mb = max_memory_mb
        self._decode_threads = decode_threads
        self._proc: subprocess.Popen | None = None
        self._open_doc: str | None = None

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                _kill_group(self._proc.pid)  # what the dead helper started
            self._proc = _spawn(
                [
                    sys.executable,
                    "-m",
                    "vlbeam.transforms.media.helper_process",
                    str(self._max_memory_mb),
                    str(os.getpid()),
                    str(self._decode_threads),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                close_fds=True,
                start_new_session=True,  # its own process group: it and its children die together
            )
            self._open_doc = None
        return self._proc

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before the first call)."""
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        """Kill the helper and everything it started (its process group)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _kill_group(proc.pid)
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if stream:
                        stream.close()
        self._open_doc = None

    def _call(self, request: dict, timeout_s: float, what: str):
        proc = self._start()
        try:
            _write_msg(proc.stdin.fileno(), request)
            reply = _read_msg(proc.stdout.fileno(), time.monotonic() + timeout_s)
        except TimeoutError:
            self.close()
            raise RenderTimeout(f"{what} took longer than {timeout_s:g} s; gave up") from None
        except (EOFError, BrokenPipeError, OSError):
            try:  # reap it, so the exit code (e.g. -9 when killed) is known
                code = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
            self.close()
            raise RendererCrashed(
                f"the render process died during {what} (exit code {code}); the file may be "
                f"corrupt or need more than {self._max_memory_mb} MB"
            ) from None
        self._open_doc = reply.get("doc_id")  # what the child holds now, even after an error
        if reply.get("error"):
            name, message = reply["error"]
            raise RemoteError(name, message)
        return reply["result"]

    def _doc_fields(self, doc_id: str, data: bytes | str, kind: str, password: str | None) -> dict:
        """`data`: the document's URI (the child reads the file itself: nothing crosses the
        pipe, and a local file is read by pdfium part by part), or its bytes. Sent only when
        the child doesn't already hold this document."""
        same = self._open_doc == doc_id and self._proc is not None and self._proc.poll() is None
        return {
            "doc_id": doc_id,
            "kind": kind,
            "password": password,
            "data": None if same else data,
        }

    def count_pages(self, doc_id: str, data: bytes | str, password: str | None) -> int:
        request = {"op": "count", **self._doc_fields(doc_id, data, "pdf", password)}
        return self._call(request, OPEN_TIMEOUT_S, "opening the PDF")

    def rendered_sizes(
        self, doc_id: str, data: bytes | str, kind: str, password: str | None, cfg: RenderConfig
    ) -> list:
        """Per page, the size a render would have (`pdf_render.rendered_sizes`): nothing
        rendered, for `vlbeam plan`."""
        request = {"op": "sizes", "cfg": cfg, **self._doc_fields(doc_id, data, kind, password)}
        return self._call(request, OPEN_TIMEOUT_S, "reading the page sizes")

    def probe_video(self, uri: str, timeout_s: float):
        """VideoInfo of the file at `uri` (read in the helper, never sent over the pipe)."""
        return self._call({"op": "video_probe", "uri": uri}, timeout_s, "probing the video")

    def sample_video(self, uri: str, start_s: float, end_s: float, cfg, timeout_s: float):
        """(frames, decode errors) for [start_s, end_s) of the video at `uri`."""
        request = {"op": "video_window", "uri": uri, "start": start_s, "end": end_s, "cfg": cfg}
        return self._call(request, timeout_s, f"decoding {start_s:.1f}-{end_s:.1f} s")

    def render(
        self, doc_id: str, data: bytes | str, kind: str, page_number: int, cfg: RenderConfig
    ):
        request = {
            "op": "render",
            "page": page_number,
            "cfg": cfg,
            **self._doc_fields(doc_id, data, kind, cfg.password),
        }
        page = self._call(
            request,
            cfg.timeout_s + OPEN_TIMEOUT_S * (request["data"] is not None),
            f"rendering page {page_number}",
        )
        self._open_doc = doc_id
        return page


# ---------------------------------------------------------------- child side


# pdfium keeps every parsed object until a document is closed: reopening it every this
# many pages keeps the helper's memory flat on very long documents (~30 ms per reopen).
REOPEN_EVERY_PAGES = 64


class _ChildState:
    def __init__(self, decode_threads: int = 0) -> None:
        self.decode_threads = decode_threads
        self.doc_id: str | None = None
        self.data: bytes | None = None
        self.doc = None
        self.password: str | None = None
        self.pages_since_open = 0
        self.tmp_path: str | None = None
        self.path: str | None = None  # the document on local disk, when opened from a URI
        self.copied: str | None = None  # a remote document's local copy (removed at close)
        self.mapped = None  # the mmap behind `data`, when opened from a URI
        self.video_uri: str | None = None
        self.video = None  # (container, VideoInfo)

    def open_video(self, uri: str):
        from vlbeam.transforms.media.video_decode import (
            open_container,
            probe,
            set_decode_threads,
        )

        if uri != self.video_uri:
            if self.video is not None:
                self.video[0].close()
            self.video_uri, self.video = None, None
            source = uri
            if "://" in uri:  # gs://, s3://, ...: a seekable file object from Beam
                from apache_beam.io.filesystems import FileSystems

                source = FileSystems.open(uri, compression_type="uncompressed")
            container = open_container(source)
            set_decode_threads(container, self.decode_threads)
            self.video, self.video_uri = (container, probe(container)), uri
        return self.video

    def open(self, request: dict):
        from vlbeam.transforms.media.pdf_render import open_pdf

        if request["data"] is not None:
            self.close()
            source = request["data"]
            if isinstance(source, str):  # a URI: read here, mapped, never whole in memory
                self.path = self._local(source)
                self.data = self._map(self.path)
            else:
                self.data = source
            self.doc_id, self.password = request["doc_id"], request["password"]
            if request["kind"] == "pdf":
                self.doc = open_pdf(self.data, self.password, self.path)
        elif request["doc_id"] != self.doc_id:
            raise RuntimeError("protocol error: document not open")
        elif self.doc is not None and self.pages_since_open >= REOPEN_EVERY_PAGES:
            self.doc.close()
            self.doc, self.pages_since_open = None, 0
            self.doc = open_pdf(self.data, self.password, self.path)

    def _local(self, uri: str) -> str:
        """A local path for `uri`: itself, or (gs://, s3://, ...) a temporary copy."""
        if "://" not in uri:
            return uri
        import shutil
        import tempfile

        from apache_beam.io.filesystems import FileSystems

        handle, self.copied = tempfile.mkstemp(suffix=".pdf", prefix="vlbeam-")
        with (
            os.fdopen(handle, "wb") as out,
            FileSystems.open(uri, compression_type="uncompressed") as src,
        ):
            shutil.copyfileobj(src, out, 1 << 20)
        return self.copied

    def _map(self, path: str):
        import mmap

        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            self.mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self.mapped

    def pdf_path(self) -> str:
        """The current PDF as a temporary file (poppler reads files), written once."""
        import tempfile

        if self.path is not None:
            return self.path
        if self.tmp_path is None:
            handle, self.tmp_path = tempfile.mkstemp(suffix=".pdf", prefix="vlbeam-")
            with os.fdopen(handle, "wb") as out:
                out.write(self.data)
        return self.tmp_path

    def close(self) -> None:
        if self.doc is not None:
            self.doc.close()
        if self.mapped is not None:
            with contextlib.suppress(BufferError):
                self.mapped.close()
        for temporary in (self.tmp_path, self.copied):
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
        self.doc_id = self.data = self.doc = self.password = self.tmp_path = None
        self.path = self.copied = self.mapped = None
        self.pages_since_open = 0


def _handle(state: _ChildState, request: dict):
    from vlbeam.transforms.media.pdf_render import count_pages, render_image, render_pdf_page

    if request["op"] == "video_probe":
        return state.open_video(request["uri"])[1]
    if request["op"] == "video_window":
        from vlbeam.transforms.media.video_decode import sample_window

        container, info = state.open_video(request["uri"])
        return sample_window(container, info, request["start"], request["end"], request["cfg"])
    state.open(request)
    if request["op"] == "count":
        try:
            return count_pages(state.data, request["password"], state.path)
        finally:
            state.close()  # planning needs the count only: free the document now
    if request["op"] == "sizes":
        from vlbeam.transforms.media.pdf_render import rendered_sizes

        try:
            source = state.doc if request["kind"] == "pdf" else state.data
            return rendered_sizes(source, request["kind"], request["cfg"])
        finally:
            state.close()
    if request["op"] == "render":
        if request["kind"] == "image":
            return render_image(bytes(state.data), request["cfg"])
        cfg = request["cfg"]
        path = state.pdf_path() if cfg.renderer == "pdf2image" else None
        state.pages_since_open += 1
        return render_pdf_page(state.doc, request["page"], cfg, path)
    raise RuntimeError(f"unknown op {request['op']!r}")


class _DyingPopen(subprocess.Popen):
    """In the helper only (one thread, so `preexec_fn` is safe): every process it starts
    (pdf2image's `pdftoppm`) dies with it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("preexec_fn", die_with_parent)
        super().__init__(*args, **kwargs)


def _child_main(max_memory_mb: int, parent: int | None = None, decode_threads: int = 0) -> None:
    import resource

    die_with_parent()
    if parent is not None and os.getppid() != parent:
        return  # the parent died before the signal was asked for
    subprocess.Popen = _DyingPopen  # before pdf2image imports it

    limit = max_memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Keep the protocol on a private fd; anything a C library prints goes to stderr.
    proto_out = os.dup(1)
    os.dup2(2, 1)
    proto_in = 0
    state = _ChildState(decode_threads)
    while True:
        try:
            request = _read_msg(proto_in)
        except EOFError:
            return
        try:
            reply = {"result": _handle(state, request)}
        except MemoryError:
            reply = {"error": ("PageTooLarge", "rendering ran out of its memory limit")}
        except VlbeamError as exc:
            reply = {"error": (type(exc).__name__, str(exc))}
        except Exception as exc:  # any other library error becomes a clear failure
            reply = {"error": (type(exc).__name__, f"{type(exc).__name__}: {exc}")}
        reply["doc_id"] = state.doc_id
        _write_msg(proto_out, reply)


if __name__ == "__main__":
    _child_main(
        int(sys.argv[1]),
        int(sys.argv[2]) if len(sys.argv) > 2 else None,
        int(sys.argv[3]) if len(sys.argv) > 3 else 0,
    )
