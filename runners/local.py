"""Local runs: Beam's in-process runner (never downloads a runner binary), optionally with
N worker processes on this machine."""

from __future__ import annotations


def local_args(workers: int | None = None) -> list[str]:
    if workers is not None and workers < 1:
        raise ValueError("--workers must be >= 1")
    args = ["--runner=FnApiRunner"]
    if workers and workers > 1:
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    return args
