"""The whole pipeline through Beam's portable path (PortableRunner → a local job service →
SDK workers in a separate worker-pool process, EXTERNAL environment, vlbeam staged as a wheel)
gives the same rows as the in-process run. This is the path Flink and Dataflow use, so it
catches unpicklable transforms, module-level state, launcher-only imports and models loaded
outside `load_model`."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline_helpers import build_wheel, read_table
from tests.video_fixtures import constant_rate, write_video
from vlbeam.pipeline.run import run
from vlbeam.schemas import TABLES

REPO = Path(__file__).resolve().parents[2]
VOLATILE = {"latency_s"}  # wall-clock measurements differ between runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port} after {timeout_s} s")


@pytest.fixture(scope="module")
def beam_services(tmp_path_factory):
    """A job service and a worker pool, each its own process group, killed at the end."""
    logs = tmp_path_factory.mktemp("beam-services")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    job_port, pool_port = free_port(), free_port()
    procs = []
    try:
        for args, port, name in [
            (["apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"],
             job_port, "job"),
            (["apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
             pool_port, "pool"),
        ]:  # fmt: skip
            log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen(
                [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=logs, start_new_session=True,
            )  # fmt: skip
            procs.append(proc)
            wait_for_port(port, proc)
        yield f"localhost:{job_port}", f"localhost:{pool_port}"
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def vlbeam_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def job_args(inputs: Path, out: Path, model: Path) -> list[str]:
    return [
        f"--input={inputs}/*",
        f"--output={out}",
        f"--model={model}",  # the sharp tiny checkpoint: its answers depend on the input
        "--max-new-tokens=4",
        "--max-batch-size=1",  # same batches in both runs: identical greedy outputs
        "--target-long-side=384",
        "--pages-per-task=2",
        "--window-seconds=4",
        "--window-overlap-seconds=1",
        "--max-pixels-per-frame=16384",
        "--run-id=same-run",
    ]


def comparable(out: Path, table: str) -> list[tuple]:
    rows = read_table(out, table)
    keys = [k for k in TABLES[table].names if k not in VOLATILE]
    return sorted(tuple(repr(row[k]) for k in keys) for row in rows)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_portable_run_equals_in_process_run(
    beam_services, vlbeam_wheel, sharp_model, corpus, tmp_path, capsys
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("born_digital.pdf", "scanned_page.pdf"):
        (inputs / name).write_bytes((REPO / "samples" / name).read_bytes())
    (inputs / "paper.pdf").write_bytes((corpus / "pdf/good/pdfjs_tracemonkey.pdf").read_bytes())
    (inputs / "broken.pdf").write_bytes(
        (corpus / "pdf/bad/tracemonkey_truncated_50pct.pdf").read_bytes()
    )
    write_video(inputs / "clip.mp4", constant_rate(9, 10), (2.0, 5.0))
    model = sharp_model

    in_process = tmp_path / "in_process"
    started = time.monotonic()
    run(job_args(inputs, in_process, model))
    local_s = time.monotonic() - started
    local_summary = capsys.readouterr().out

    job_endpoint, worker_pool = beam_services
    portable = tmp_path / "portable"
    started = time.monotonic()
    portable_flags = [
        "--runner=PortableRunner", f"--job_endpoint={job_endpoint}",
        "--environment_type=EXTERNAL", f"--environment_config={worker_pool}",
        f"--extra_package={vlbeam_wheel}",
    ]  # fmt: skip
    run([*job_args(inputs, portable, model), *portable_flags])
    portable_s = time.monotonic() - started
    portable_summary = capsys.readouterr().out

    for table in TABLES:
        assert comparable(portable, table) == comparable(in_process, table), table
    docs = read_table(portable, "documents")
    assert len(docs) == 5 and len(read_table(portable, "pages")) == 16
    assert read_table(portable, "video_windows") and read_table(portable, "failures")
    texts = [p["text"] for p in read_table(portable, "pages")]
    assert len(set(texts)) > 1, texts  # answers depend on the page: equal rows mean something
    # the model is loaded once per worker process, in load_model
    assert "model loads: 1 " in local_summary and "model loads: 1 " in portable_summary
    print(f"in-process {local_s:.1f} s, portable {portable_s:.1f} s")
