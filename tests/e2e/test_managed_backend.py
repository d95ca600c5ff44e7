"""`--backend vllm` end to end, the server started and managed by vlbeam through
`--server-command` (a real `transformers serve` on the tiny checkpoint, 127.0.0.1 only): a full
OCR + video job, `kill -9` of the server mid-run (restarted, every page exactly once), nothing
left running afterwards, and a server that exits at once failing the job with its log."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import require_module
from tests.pipeline_helpers import SAMPLES_GLOB, inked_page, read_table, run_job
from tests.video_fixtures import constant_rate, write_video

require_module("fastapi", "dev")
require_module("uvicorn", "dev")

SERVE = "{python} -m transformers.cli.transformers serve {model} --host {host} --port {port} --device cpu"  # noqa: E501


@pytest.fixture
def serve_env(tiny_model, tmp_path, monkeypatch):
    hub = tmp_path / "hf-hub-cache"  # transformers serve scans it: it must exist
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    return tiny_model


def server_processes() -> list[psutil.Process]:
    """`transformers serve` processes started from this test process."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "transformers.cli.transformers" in " ".join(proc.cmdline()):
                found.append(proc)
    return found


def managed_args(*extra: str) -> list[str]:
    return [
        "--backend=vllm",
        "--model=tiny-random",
        f"--server-command={SERVE}",
        "--server-start-timeout-s=180",
        "--max-new-tokens=4",
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ocr_and_video_job_through_a_managed_server(serve_env, tmp_path):
    video = tmp_path / "in" / "clip.mp4"
    video.parent.mkdir()
    write_video(video, constant_rate(3, 5), (1.0, 2.0))
    out = tmp_path / "out"
    run_job([SAMPLES_GLOB, str(video)], out, *managed_args("--fps=1", "--run-id=managed"))

    # random weights answer garbage: the window's answer reached the table, and its parse
    # failed (the one failure); nothing failed on the way to or from the server
    [failure] = read_table(out, "failures")
    assert (failure["stage"], failure["error_type"]) == ("parse", "UnparseableAnswer")
    docs = {Path(d["source_uri"]).name: d for d in read_table(out, "documents")}
    assert {d["status"] for name, d in docs.items() if name != "clip.mp4"} == {"ok"}
    assert len(docs) == 3
    assert {(d["backend"], d["model"]) for d in docs.values()} == {("vllm", "tiny-random")}
    pages = read_table(out, "pages")
    assert len(pages) == 2
    for page in pages:
        # the server's own report: usage (image tokens count as input) and its model name
        assert page["input_tokens"] > 100 and page["output_tokens"] == 4
        assert page["served_model"] and page["finish_reason"] == "length"
    [window] = read_table(out, "video_windows")
    assert window["backend"] == "vllm" and window["num_frames"] == 3
    assert window["input_tokens"] > 3 * 100  # three frames reached the server
    # the engine closed with the last DoFn instance: no server is left running
    assert server_processes() == []


class _Answered(logging.Handler):
    """Counts the chat requests the server has answered (its access log, forwarded)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "POST /v1/chat/completions" in record.getMessage():
            self.count += 1


def _kill_when_busy(started_pids: list[int], answered: _Answered, stop: threading.Event) -> None:
    """Once the server has answered a few requests (the rest still to come), kill -9 its whole
    group, then keep recording the pids of servers started after it."""
    killed = False
    while not stop.is_set():
        for proc in server_processes():
            if proc.pid not in started_pids:
                started_pids.append(proc.pid)
            if not killed and answered.count >= 3:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
                killed = True
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_mid_run_restarts_the_server_and_loses_nothing(serve_env, tmp_path):
    pdf = tmp_path / "in" / "sixteen.pdf"
    pdf.parent.mkdir()
    pages = [inked_page((200, 260), (255, 250 - 5 * i, 255)) for i in range(16)]
    pages[0].save(pdf, save_all=True, append_images=pages[1:])
    started: list[int] = []
    stop = threading.Event()
    answered = _Answered()
    server_log = logging.getLogger("vlbeam.transforms.backends.managed_server")
    server_log.addHandler(answered)
    server_log.setLevel(logging.DEBUG)
    watcher = threading.Thread(target=_kill_when_busy, args=(started, answered, stop), daemon=True)
    watcher.start()
    out = tmp_path / "out"
    try:
        run_job([str(pdf)], out, *managed_args("--max-new-tokens=32", "--max-concurrency=2",
                                              "--target-long-side=256"))  # fmt: skip
    finally:
        stop.set()
        watcher.join(timeout=10)
        server_log.removeHandler(answered)
    assert 3 <= answered.count < 16 + 3  # killed mid-run, answered again after the restart
    assert len(started) == 2, "the server was killed once and started again"
    assert read_table(out, "failures") == []
    numbers = sorted(p["page_number"] for p in read_table(out, "pages"))
    assert numbers == list(range(1, 17))  # every page exactly once
    assert server_processes() == []


@pytest.mark.timeout(120)
def test_a_server_that_exits_at_once_fails_the_job_with_its_log(tmp_path):
    command = f"{sys.executable} -c \"import sys; print('boom: no GPU'); sys.exit(3)\" {{port}}"
    started = time.monotonic()
    with pytest.raises(Exception, match="boom: no GPU"):
        run_job([SAMPLES_GLOB], tmp_path / "out", "--backend=vllm", "--model=some/model",
                f"--server-command={command}", "--server-start-timeout-s=60")  # fmt: skip
    assert time.monotonic() - started < 60
    assert not (Path(tmp_path) / "out" / "pages").exists()
