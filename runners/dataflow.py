"""Google Cloud Dataflow: GPU workers for the local transformers backend, CPU-only workers for
the HTTP backend, both on the worker image built from the repository's `Dockerfile`.

Beam's own flags (`--project`, `--region`, `--temp_location`, `--machine_type`,
`--max_num_workers`, ...) pass straight through; these add what vlbeam needs on top.
"""

from __future__ import annotations

REQUIRED = ("project", "region", "temp_location")


def dataflow_args(
    *,
    image: str,
    gpu: str | None = None,
    gpu_count: int = 1,
    beam_args: list[str] | None = None,
) -> list[str]:
    """Flags for DataflowRunner. With `gpu` (an accelerator type such as `nvidia-l4`), the
    workers get that accelerator with the NVIDIA driver installed, and one SDK process per
    VM (`no_use_multiple_sdk_containers`) so a large model is loaded once per GPU."""
    given = {a.split("=", 1)[0].lstrip("-").replace("-", "_") for a in beam_args or []}
    missing = [name for name in REQUIRED if name not in given]
    if missing:
        raise ValueError("--target dataflow needs " + ", ".join(f"--{m}" for m in missing))
    args = [
        "--runner=DataflowRunner",
        f"--sdk_container_image={image}",
        "--sdk_location=container",
    ]
    if gpu:
        if gpu_count < 1:
            raise ValueError("--gpu-count must be >= 1")
        args += [
            "--dataflow_service_options="
            f"worker_accelerator=type:{gpu};count:{gpu_count};install-nvidia-driver",
            "--experiments=no_use_multiple_sdk_containers",
        ]
        if not given & {"machine_type", "worker_machine_type"}:
            args.append(f"--machine_type={default_gpu_machine(gpu)}")
    return args


def default_gpu_machine(gpu: str) -> str:
    """A machine type that can carry the accelerator (L4 needs G2, others take N1)."""
    return "g2-standard-8" if gpu == "nvidia-l4" else "n1-standard-8"
