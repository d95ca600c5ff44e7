"""How a machine's GPUs are shared between managed servers: one server per group of
`--tensor-parallel-size` GPUs (data parallel across groups), the GPUs being what
CUDA_VISIBLE_DEVICES or `nvidia-smi` shows this process. Pure but for `visible_gpus`, which
reads the environment and may run `nvidia-smi`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence

from vlbeam.transforms.backends.server_spec import ServerSpec

logger = logging.getLogger(__name__)


def parse_visible_devices(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of ids ("" or "-1": no GPU); None when unset."""
    if value is None:
        return None
    ids = [part.strip() for part in value.split(",") if part.strip()]
    if ids and ids[0].startswith("-"):
        return []
    return ids


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what `nvidia-smi`
    lists, else none."""
    environ = os.environ if environ is None else environ
    ids = parse_visible_devices(environ.get("CUDA_VISIBLE_DEVICES"))
    if ids is not None:
        return ids
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def gpu_groups(gpu_ids: Sequence[str], tensor_parallel_size: int = 1) -> list[tuple[str, ...]]:
    """Split a machine's GPUs between servers: one server per `tensor_parallel_size` GPUs (data
    parallel across groups). `tensor_parallel_size` equal to the GPU count gives one server
    spanning them all. GPUs left over (count not a multiple) stay unused, with a warning."""
    if tensor_parallel_size < 1:
        raise ValueError("tensor_parallel_size must be >= 1")
    ids = list(gpu_ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate GPU ids: {ids}")
    if len(ids) < tensor_parallel_size:
        raise ValueError(
            f"--tensor-parallel-size {tensor_parallel_size} needs {tensor_parallel_size} GPUs, "
            f"this machine has {len(ids)} ({','.join(ids) or 'none'})"
        )
    count = len(ids) // tensor_parallel_size
    left = ids[count * tensor_parallel_size :]
    if left:
        logger.warning(
            "%d GPUs with tensor parallel size %d: GPUs %s stay unused",
            len(ids),
            tensor_parallel_size,
            ",".join(left),
        )
    return [
        tuple(ids[i * tensor_parallel_size : (i + 1) * tensor_parallel_size]) for i in range(count)
    ]


def group_specs(spec: ServerSpec, gpu_ids: Iterable[str] | None = None) -> list[ServerSpec]:
    """Data parallel: one spec per group of `spec.tensor_parallel_size` GPUs among `gpu_ids`
    (default: this process's visible GPUs), each pinned to its group. With `spec.gpu_ids`
    set, or no GPU at all, just `[spec]`."""
    ids = list(visible_gpus() if gpu_ids is None else gpu_ids)
    if spec.gpu_ids is not None or not ids:
        return [spec]
    return [
        dataclasses.replace(spec, gpu_ids=group)
        for group in gpu_groups(ids, spec.tensor_parallel_size)
    ]
