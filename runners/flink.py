"""An existing Apache Flink cluster through Beam's FlinkRunner (the job server jar is fetched by
Beam on the launching machine, which needs internet access or `--flink_job_server_jar`)."""

from __future__ import annotations


def flink_args(
    *,
    master: str,
    parallelism: int | None = None,
    environment: str = "DOCKER",
    environment_config: str | None = None,
    job_server_jar: str | None = None,
) -> list[str]:
    """Flags for FlinkRunner. DOCKER workers run the vlbeam worker image
    (`environment_config` = the image); EXTERNAL workers are a worker pool beside each task
    manager (`environment_config` = HOST:PORT)."""
    environment = environment.upper()
    if environment not in ("DOCKER", "EXTERNAL", "PROCESS", "LOOPBACK"):
        raise ValueError("--environment-type must be DOCKER, EXTERNAL, PROCESS or LOOPBACK")
    if environment in ("DOCKER", "EXTERNAL") and not environment_config:
        raise ValueError(f"{environment} workers need --environment-config")
    args = [
        "--runner=FlinkRunner",
        f"--flink_master={master}",
        f"--environment_type={environment}",
    ]
    if parallelism:
        args.append(f"--parallelism={parallelism}")
    if environment_config:
        args.append(f"--environment_config={environment_config}")
    if job_server_jar:
        args.append(f"--flink_job_server_jar={job_server_jar}")
    return args
