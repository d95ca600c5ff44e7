"""HelperProcess: the render helper process, its document cache, errors, time bound and crashes."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.errors import (
    RemoteError,
    RendererCrashed,
    RenderTimeout,
    VlbeamError,
    error_type,
)
from vlbeam.transforms.media.helper_process import HelperProcess, _read_msg, _write_msg

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SMALL = RenderConfig(target_long_side=128)
# ocrmypdf_poster.pdf (1800x3600 pt) at 8192x16384 px takes ~5 s to render: long enough
# to time out or be killed in the middle of, deterministically.
HUGE = dict(target_long_side=16384, max_pixels=16384 * 16384)

DOC_A = "a" * 64
DOC_B = "b" * 64
DOC_C = "c" * 64


@pytest.fixture
def worker():
    w = HelperProcess()
    yield w
    w.close()


def _pid(worker: HelperProcess) -> int:
    assert worker._proc is not None
    return worker._proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- wire protocol


def test_read_msg_round_trip_and_eof() -> None:
    r, w = os.pipe()
    try:
        message = {"op": "render", "data": b"\x00" * 100_000, "page": 3}
        writer = threading.Thread(target=_write_msg, args=(w, message))
        writer.start()
        assert _read_msg(r, time.monotonic() + 5) == message
        writer.join()
        os.close(w)
        w = -1
        with pytest.raises(EOFError):
            _read_msg(r)
    finally:
        os.close(r)
        if w != -1:
            os.close(w)


def test_read_msg_deadline() -> None:
    r, w = os.pipe()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            _read_msg(r, started + 0.2)  # nothing arrives
        assert 0.15 < time.monotonic() - started < 2.0

        os.write(w, b"\x00\x00\x00\x00")  # half a header, then silence
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            _read_msg(r, started + 0.2)
        assert time.monotonic() - started < 2.0

        with pytest.raises(TimeoutError):  # a deadline already past
            _read_msg(r, time.monotonic() - 1)
    finally:
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------- normal operation


def test_count_and_render(worker: HelperProcess, corpus: Path) -> None:
    data = (corpus / "pdf/good/samplefiles_habibi-rotated.pdf").read_bytes()
    assert worker.count_pages(DOC_A, data, None) == 4
    sizes = []
    for n in range(1, 5):
        page = worker.render(DOC_A, data, "pdf", n, SMALL)
        image = Image.open(io.BytesIO(page.image))
        assert image.size == (page.width_px, page.height_px)
        assert page.image_format == "png"
        assert "habibi" in page.text_layer
        sizes.append((page.width_px, page.height_px))
    assert sizes == [(128, 91), (91, 128), (128, 91), (91, 128)]


def test_render_image_kind(worker: HelperProcess) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), "white").save(buf, format="JPEG")
    page = worker.render(DOC_C, buf.getvalue(), "image", 1, SMALL)
    assert (page.width_px, page.height_px) == (128, 96)
    assert page.text_layer is None


def test_document_stays_open_between_calls(worker: HelperProcess, corpus: Path) -> None:
    data = (corpus / "pdf/good/samplefiles_habibi-rotated.pdf").read_bytes()
    first = worker.render(DOC_A, data, "pdf", 1, SMALL)
    # Same document: the bytes are not sent again, so empty bytes still render page 2.
    second = worker.render(DOC_A, b"", "pdf", 2, SMALL)
    assert (first.width_px, first.height_px) == (128, 91)
    assert (second.width_px, second.height_px) == (91, 128)
    # A different document does get its bytes sent: empty bytes are now an empty file.
    with pytest.raises(RemoteError) as info:
        worker.render(DOC_B, b"", "pdf", 1, SMALL)
    assert error_type(info.value) == "InvalidPdf"
    assert "empty" in str(info.value)


def test_count_frees_the_document_and_render_resends_it(worker: HelperProcess) -> None:
    """Planning only needs the count, so the helper drops the document after counting
    (memory); the next render sends the bytes again, later pages of it don't."""
    data = (SAMPLES / "born_digital.pdf").read_bytes()
    assert worker.count_pages(DOC_A, data, None) == 1
    page = worker.render(DOC_A, data, "pdf", 1, SMALL)
    assert "born-digital" in page.text_layer
    again = worker.render(DOC_A, b"", "pdf", 1, SMALL)  # held now: no bytes needed
    assert again.image == page.image


def test_long_documents_are_reopened_to_keep_memory_flat(corpus: Path, monkeypatch):
    """The child's side, in this process: every REOPEN_EVERY_PAGES renders the document is
    closed (pdfium frees what it parsed) and opened again, and the pages stay the same."""
    from vlbeam.transforms.media import helper_process, pdf_render

    every = 4
    monkeypatch.setattr(helper_process, "REOPEN_EVERY_PAGES", every)
    opened, closed = [], []
    real_open = pdf_render.open_pdf

    def counting_open(*args, **kwargs):
        doc = real_open(*args, **kwargs)
        opened.append(doc)
        real_close = doc.close
        doc.close = lambda: (closed.append(doc), real_close())[1]
        return doc

    monkeypatch.setattr(pdf_render, "open_pdf", counting_open)
    data = (corpus / "pdf/good/samplefiles_GeoTopo-komprimiert.pdf").read_bytes()
    state = helper_process._ChildState()

    def render(n: int, first: bool = False):
        request = {"op": "render", "doc_id": DOC_A, "kind": "pdf", "password": None,
                   "data": data if first else None, "page": n, "cfg": SMALL}  # fmt: skip
        return helper_process._handle(state, request)

    try:
        pages = [render(1, first=True)] + [render(n) for n in (2, 3)]
        later = [render(1 + i % 3) for i in range(3 * every - 3)]  # 3 * every renders in all
    finally:
        state.close()
    assert len(opened) == 3  # opened at render 1, reopened before renders 5 and 9
    assert closed == opened  # each one closed: the last by close()
    assert len({id(doc) for doc in opened}) == 3
    assert [p.image for p in later[-3:]] == [pages[(len(later) + i) % 3].image for i in range(3)]


def test_password_reaches_the_child(worker: HelperProcess, corpus: Path) -> None:
    data = (corpus / "pdf/bad/samplefiles_libreoffice-writer-password.pdf").read_bytes()
    assert worker.count_pages(DOC_A, data, "openpassword") == 1
    cfg = RenderConfig(target_long_side=128, password="openpassword")
    assert worker.render(DOC_A, data, "pdf", 1, cfg).height_px == 128


# ---------------------------------------------------------------- errors


def test_errors_come_back_typed_and_keep_the_child(worker: HelperProcess, corpus: Path) -> None:
    encrypted = (corpus / "pdf/bad/samplefiles_libreoffice-writer-password.pdf").read_bytes()
    with pytest.raises(RemoteError) as info:
        worker.count_pages(DOC_A, encrypted, None)
    assert isinstance(info.value, VlbeamError)
    assert info.value.error_type_name == error_type(info.value) == "EncryptedPdf"
    assert "--pdf-password" in str(info.value)
    pid = _pid(worker)

    truncated = (corpus / "pdf/bad/tracemonkey_truncated_50pct.pdf").read_bytes()
    with pytest.raises(RemoteError) as info:
        worker.count_pages(DOC_B, truncated, None)
    assert error_type(info.value) == "InvalidPdf"

    good = (corpus / "pdf/good/samplefiles_habibi-rotated.pdf").read_bytes()
    with pytest.raises(RemoteError) as info:
        worker.render(DOC_C, good, "pdf", 9, SMALL)
    assert error_type(info.value) == "InvalidPdf"
    assert "page 9" in str(info.value)

    with pytest.raises(RemoteError) as info:
        worker.render(DOC_A, b"not an image", "image", 1, SMALL)
    assert error_type(info.value) == "InvalidImage"

    # Expected failures don't cost a restart.
    assert _pid(worker) == pid
    assert worker.render(DOC_C, good, "pdf", 4, SMALL).height_px == 128


def test_failed_open_does_not_break_the_previous_document(
    worker: HelperProcess, corpus: Path
) -> None:
    good = (corpus / "pdf/good/samplefiles_habibi-rotated.pdf").read_bytes()
    encrypted = (corpus / "pdf/bad/samplefiles_libreoffice-writer-password.pdf").read_bytes()
    assert worker.count_pages(DOC_A, good, None) == 4
    with pytest.raises(RemoteError):
        worker.count_pages(DOC_B, encrypted, None)
    assert worker.count_pages(DOC_A, good, None) == 4


# ---------------------------------------------------------------- time bound and crashes


def test_render_timeout_kills_the_child_and_recovers(worker: HelperProcess, corpus: Path) -> None:
    poster = (corpus / "pdf/good/ocrmypdf_poster.pdf").read_bytes()
    worker.render(DOC_A, poster, "pdf", 1, SMALL)  # document held now: no +60 s open budget
    pid = _pid(worker)
    started = time.monotonic()
    with pytest.raises(RenderTimeout, match=r"rendering page 1 took longer than 0\.3 s"):
        worker.render(DOC_A, poster, "pdf", 1, RenderConfig(timeout_s=0.3, **HUGE))
    assert time.monotonic() - started < 2.0
    assert not _alive(pid)

    # The next call gets a fresh child, which is sent the document again.
    page = worker.render(DOC_A, poster, "pdf", 1, SMALL)
    assert (page.width_px, page.height_px) == (64, 128)
    assert _pid(worker) != pid


def test_child_killed_during_a_call_is_a_crash_and_recovers(
    worker: HelperProcess, corpus: Path
) -> None:
    poster = (corpus / "pdf/good/ocrmypdf_poster.pdf").read_bytes()
    worker.render(DOC_A, poster, "pdf", 1, SMALL)  # document held now
    pid = _pid(worker)
    killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    try:
        with pytest.raises(RendererCrashed, match=r"exit code -9"):
            worker.render(DOC_A, poster, "pdf", 1, RenderConfig(timeout_s=60, **HUGE))
    finally:
        killer.cancel()
    assert time.monotonic() - started < 5.0

    worker.render(DOC_A, poster, "pdf", 1, SMALL)  # document held now
    assert _pid(worker) != pid


def test_child_dead_between_calls_is_replaced_transparently(
    worker: HelperProcess, corpus: Path
) -> None:
    data = (corpus / "pdf/good/samplefiles_habibi-rotated.pdf").read_bytes()
    assert worker.render(DOC_A, data, "pdf", 1, SMALL).width_px == 128
    proc = worker._proc
    proc.kill()
    proc.wait()
    # The new child does not have the document: the bytes are sent again.
    assert worker.render(DOC_A, data, "pdf", 2, SMALL).height_px == 128
    assert _pid(worker) != proc.pid
    # ...so a caller relying on the dead child's cache gets an honest error, not a wrong page.
    worker._proc.kill()
    worker._proc.wait()
    with pytest.raises(RemoteError) as info:
        worker.render(DOC_A, b"", "pdf", 3, SMALL)
    assert error_type(info.value) == "InvalidPdf"


def test_memory_limit_is_a_failure_not_a_hang(corpus: Path) -> None:
    poster = (corpus / "pdf/good/ocrmypdf_poster.pdf").read_bytes()
    worker = HelperProcess(max_memory_mb=256)
    try:
        worker.render(DOC_A, poster, "pdf", 1, SMALL)  # document held now
        cfg = RenderConfig(timeout_s=30, max_memory_mb=256, **HUGE)
        with pytest.raises((RemoteError, RendererCrashed)) as info:
            worker.render(DOC_A, poster, "pdf", 1, cfg)
        assert error_type(info.value) in {"PageTooLarge", "RendererCrashed"}
        # Either way the worker goes on.
        page = worker.render(DOC_A, poster, "pdf", 1, SMALL)
        assert page.height_px == 128
    finally:
        worker.close()


def test_close_is_idempotent_and_restartable() -> None:
    worker = HelperProcess()
    worker.close()  # never started
    data = (SAMPLES / "born_digital.pdf").read_bytes()
    assert worker.count_pages(DOC_A, data, None) == 1
    pid = _pid(worker)
    worker.close()
    worker.close()
    assert not _alive(pid)
    assert worker.count_pages(DOC_A, data, None) == 1
    worker.close()
