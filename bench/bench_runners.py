"""Wall time of the same vlbeam job on the in-process runner, on N local worker processes, and
through Beam's portable path (job service + EXTERNAL worker pool), with the number of model
loads each run reports (one per worker process). Prints a table and writes JSON.

    .venv/bin/python bench/bench_runners.py [--workers 2] [--out bench/results/bench_runners.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(port)


def make_inputs(folder: Path, corpus: Path) -> None:
    sys.path.insert(0, str(REPO))
    from tests.video_fixtures import constant_rate, write_video

    for name in ("born_digital.pdf", "scanned_page.pdf"):
        (folder / name).write_bytes((REPO / "samples" / name).read_bytes())
    (folder / "paper.pdf").write_bytes((corpus / "pdf/good/pdfjs_tracemonkey.pdf").read_bytes())
    write_video(folder / "clip.mp4", constant_rate(30, 10), (5.0, 9.0))


def run_job(argv: list[str]) -> tuple[float, int]:
    from vlbeam.pipeline.run import run

    out = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out):
        run(argv)
    wall = time.monotonic() - started
    loads = int(re.search(r"model loads: (\d+)", out.getvalue()).group(1))
    return wall, loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--corpus", default=os.environ.get("VLBEAM_CORPUS", str(REPO.parent / "shared/corpus"))
    )
    parser.add_argument("--out", default=str(REPO / "bench/results/bench_runners.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="vlbeam-bench-runners-"))
    inputs = tmp / "in"
    inputs.mkdir()
    make_inputs(inputs, Path(args.corpus))
    from vlbeam.transforms.backends.tiny_model import ensure_tiny_model

    ensure_tiny_model()  # built once, outside every timing
    common = [f"--input={inputs}/*", "--model=tiny-random", "--max-new-tokens=8",
              "--target-long-side=768"]  # fmt: skip
    job_port, pool_port = free_port(), free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    services = [
        subprocess.Popen(
            [sys.executable, "-m", module, flag],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for module, flag in [
            ("apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"),
            ("apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"),
        ]
    ]
    try:
        wait_port(job_port)
        wait_port(pool_port)
        runs = {
            "in-process (FnApiRunner)": ["--runner=FnApiRunner"],
            f"multi-process ({args.workers} workers)": [
                "--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                f"--direct_num_workers={args.workers}",
            ],
            "portable (job service + EXTERNAL pool)": [
                "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}",
            ],
        }  # fmt: skip
        results = {}
        for i, (name, flags) in enumerate(runs.items()):
            wall, loads = run_job([*common, f"--output={tmp}/out{i}", *flags])
            results[name] = {"wall_s": round(wall, 2), "model_loads": loads}
    finally:
        for proc in services:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
    base = next(iter(results.values()))["wall_s"]
    print(f"{'runner':42s} {'wall s':>8s} {'x in-process':>13s} {'model loads':>12s}")
    for name, r in results.items():
        print(f"{name:42s} {r['wall_s']:8.2f} {r['wall_s'] / base:13.2f} {r['model_loads']:12d}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"runs": results, "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
