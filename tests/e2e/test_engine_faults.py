"""Engine faults end to end through `vlbeam run` (issue #20, the engine half), against local
servers on 127.0.0.1 that read each page's colour to know which page they answer:

- a timeout, then 401s (or 403s): the run stops after at most `auth_failures_to_abort` rejected
  calls with one message and exit 3; 400/404 never stop it;
- `--backend vllm --server-command` with a server that crashes whenever it is sent one page:
  one `ServerCrash` row for that page, every other page answered, exactly once;
- a server that hangs (the health URL too): restarted, then the breaker opens; the run ends
  in bounded time with exit 3, every page a row or a failure, what was done published;
- no process left after any of them.

How the old code failed each (seen): the 401 run exited 0 with 89 `HTTP401` rows and every
page tried; the crash run lost every page after the fourth crash (the poison page re-sent at
each restart), exit 0; the hang run waited on each page's timeout in turn, never restarting the
server, and exited 0.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import require_module

require_module("aiohttp", "openai")

from tests.fake_api_server import FakeApiServer, Recorded, slow, status  # noqa: E402
from tests.fault_server import page_colour, page_of  # noqa: E402
from tests.pipeline_helpers import inked_page, read_table  # noqa: E402
from vlbeam.pipeline.outcome import EXIT_TOO_MANY_FAILURES  # noqa: E402

FAULT_SERVER = Path(__file__).resolve().parents[1] / "fault_server.py"


def marked_pdf(path: Path, pages: int) -> Path:
    """A PDF whose page i has the background colour `page_colour(i)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [inked_page((120, 160), page_colour(i)) for i in range(pages)]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def cli(*argv: str) -> int:
    from vlbeam.pipeline.cli import main

    return main(["run", *argv])


def vlbeam_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("vlbeam:")]


def fault_servers() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "fault_server.py" in " ".join(proc.cmdline()) and proc.status() != "zombie":
                found.append(proc)
    return found


def no_children_left(within_s: float = 10.0) -> list[psutil.Process]:
    """Children of the test process still alive after `within_s` (helpers, servers, watchdogs)."""
    end = time.monotonic() + within_s
    while True:
        alive = []
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.2)


def page_named(rec: Recorded) -> str:
    import io

    from PIL import Image

    [image] = rec.images
    with Image.open(io.BytesIO(image)) as page:
        return f"page {page_of(page.convert('RGB').getpixel((1, 1)))}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("code", [401, 403])
def test_a_timeout_then_rejections_stops_the_run(code, tmp_path, capsys):
    pdf = marked_pdf(tmp_path / "in" / "eighty-nine.pdf", 89)
    with FakeApiServer(page_named) as server:
        model = lambda r: not r.is_preflight  # noqa: E731  (the launch check is answered)
        server.script(slow(10), match=model)  # the first page's request times out
        server.always(status(code, "Incorrect API key provided"), match=model)
        out = tmp_path / "out"
        exit_code = cli(f"--input={pdf}", f"--output={out}", "--backend=openai",
                        "--provider=openai", "--api-model=m", f"--base-url={server.base_url}",
                        "--api-key-env=", "--max-concurrency=1", "--request-timeout-s=2",
                        "--max-attempts=1", "--target-long-side=160")  # fmt: skip
        rejected = [r for r in server.model_requests() if r.behaviour == "status"]
    err = capsys.readouterr().err
    assert exit_code == 3
    [line] = vlbeam_lines(err)
    assert "rejected every request" in line and "8 authentication failures in a row" in line
    assert len(rejected) <= 8  # auth_failures_to_abort: not 89
    assert not (out / "pages").exists()  # nothing published
    assert no_children_left() == []


@pytest.mark.timeout(300)
@pytest.mark.parametrize("code", [400, 404])
def test_client_errors_other_than_auth_never_stop_the_run(code, tmp_path, capsys):
    pdf = marked_pdf(tmp_path / "in" / "thirty.pdf", 30)
    with FakeApiServer(page_named) as server:
        model = lambda r: not r.is_preflight  # noqa: E731
        server.script(slow(10), match=model)
        server.always(status(code, "bad request"), match=model)
        out = tmp_path / "out"
        exit_code = cli(f"--input={pdf}", f"--output={out}", "--backend=openai",
                        "--provider=openai", "--api-model=m", f"--base-url={server.base_url}",
                        "--api-key-env=", "--max-concurrency=1", "--request-timeout-s=2",
                        "--max-attempts=1", "--target-long-side=160")  # fmt: skip
        tried = len(server.model_requests())
    # not stopped: every page tried; every page failing is above --max-failed-fraction (#20):
    # exit 5 after publishing, with one line that says so (not the engine's code, 3)
    [line] = vlbeam_lines(capsys.readouterr().err)
    assert exit_code == EXIT_TOO_MANY_FAILURES and "100% of the work units failed" in line
    failures = read_table(out, "failures")
    assert tried == 30 and len(failures) == 30  # every page tried, one row each
    assert (
        sorted(f["error_type"] for f in failures) == ["ApiConnectionError"] + [f"HTTP{code}"] * 29
    )
    assert no_children_left() == []


def managed(command: str, *extra: str) -> list[str]:
    return [
        "--backend=vllm",
        "--model=fake",
        f"--server-command={{python}} {FAULT_SERVER} --port {{port}} {command}",
        "--server-start-timeout-s=60",
        "--target-long-side=160",
        *extra,
    ]


@pytest.mark.timeout(300)
def test_a_poison_page_costs_one_failure_row_and_every_other_page_is_answered(tmp_path):
    poison = 17  # page 18
    pdf = marked_pdf(tmp_path / "in" / "forty.pdf", 40)
    out = tmp_path / "out"
    exit_code = cli(f"--input={pdf}", f"--output={out}",
                    *managed(f"--crash-on {poison}", "--max-concurrency=4"))  # fmt: skip
    assert exit_code == 0
    failures = read_table(out, "failures")
    assert len(failures) == 1, [(f["unit"], f["error_type"], f["message"]) for f in failures]
    [failure] = failures
    assert (failure["stage"], failure["error_type"], failure["unit"]) == (
        "inference", "ServerCrash", poison + 1
    )  # fmt: skip
    pages = read_table(out, "pages")
    assert sorted(p["page_number"] for p in pages) == [n for n in range(1, 41) if n != poison + 1]
    for page in pages:  # each row is its own page's answer (read from the pixels)
        assert page["text"] == f"page {page['page_number'] - 1}"
    assert fault_servers() == [] and no_children_left() == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_hung_server_is_restarted_then_the_breaker_opens_in_bounded_time(
    tmp_path, capsys, monkeypatch
):
    from vlbeam.transforms.backends import managed_server

    # the health probe's patience after a timed-out request (no flag sets it): 1.5 s, not 5
    tunables = functools.partial(managed_server.ProcessTunables, health_timeout_s=1.5)
    monkeypatch.setattr(managed_server, "ProcessTunables", tunables)
    pdf = marked_pdf(tmp_path / "in" / "twenty.pdf", 20)
    out = tmp_path / "out"
    started = time.monotonic()
    exit_code = cli(f"--input={pdf}", f"--output={out}",
                    *managed("--hang-after 3", "--max-concurrency=1", "--request-timeout-s=1",
                             "--max-attempts=2", "--max-server-restarts=2"))  # fmt: skip
    elapsed = time.monotonic() - started
    assert exit_code == 3
    [line] = vlbeam_lines(capsys.readouterr().err)
    assert "EngineUnavailable" in line and "published" in line
    assert elapsed < 120  # not 20 pages x attempts x timeouts, and not forever
    pages = {p["page_number"]: p for p in read_table(out, "pages")}
    failures = {f["unit"]: f for f in read_table(out, "failures")}
    assert not pages.keys() & failures.keys()  # exactly once
    assert sorted([*pages, *failures]) == list(range(1, 21))
    assert len(pages) >= 2  # what was done is published
    for number, page in pages.items():
        assert page["text"] == f"page {number - 1}"
    kinds = {f["error_type"] for f in failures.values()}
    assert "EngineUnavailable" in kinds and kinds <= {"EngineUnavailable", "ServerCrash"}
    assert fault_servers() == [] and no_children_left() == []


def test_the_fault_servers_colours_read_back():
    assert [page_of(page_colour(i)) for i in range(100)] == list(range(100))
    assert sys.executable  # the servers run under this interpreter ({python})
