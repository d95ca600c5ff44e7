"""Beam's PortableRunner against a job endpoint: the Fn API path that Flink and Dataflow use.

Workers are LOOPBACK (in the launching process, for tests) or EXTERNAL (a worker pool started
with `python -m apache_beam.runners.worker.worker_pool_main --service_port=PORT` where vlbeam's
dependencies are installed). vlbeam itself is staged as a wheel with `--extra_package`.
"""

from __future__ import annotations

ENVIRONMENTS = ("LOOPBACK", "EXTERNAL", "DOCKER")


def portable_args(
    job_endpoint: str,
    environment: str = "LOOPBACK",
    worker_pool: str | None = None,
    extra_package: str | None = None,
) -> list[str]:
    environment = environment.upper()
    if environment not in ENVIRONMENTS:
        raise ValueError(f"--environment-type must be one of {ENVIRONMENTS}")
    args = [
        "--runner=PortableRunner",
        f"--job_endpoint={job_endpoint}",
        f"--environment_type={environment}",
    ]
    if environment == "EXTERNAL":
        if not worker_pool:
            raise ValueError("EXTERNAL workers need --worker-pool HOST:PORT")
        args.append(f"--environment_config={worker_pool}")
    elif worker_pool:
        args.append(f"--environment_config={worker_pool}")
    if extra_package:
        args.append(f"--extra_package={extra_package}")
    return args
