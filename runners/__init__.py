"""Runner targets: each turns a few user-facing flags into Beam pipeline options.

`vlbeam run --target local|portable|dataflow|flink [target flags] ...`; any other Beam flag
still passes straight through.
"""

from __future__ import annotations

import argparse

from vlbeam.runners.dataflow import dataflow_args
from vlbeam.runners.flink import flink_args
from vlbeam.runners.local import local_args
from vlbeam.runners.portable import portable_args

TARGETS = ("local", "portable", "dataflow", "flink")


def target_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    add = parser.add_argument
    add("--target", choices=TARGETS, default=None)
    add("--workers", type=int, default=None, help="local: worker processes on this machine")
    add("--job-endpoint", default=None, help="portable: job service HOST:PORT")
    add("--environment-type", default=None, help="portable/flink: LOOPBACK, EXTERNAL, DOCKER")
    add("--worker-pool", "--environment-config", dest="environment_config", default=None,
        help="portable/flink: worker pool HOST:PORT (EXTERNAL) or image (DOCKER)")  # fmt: skip
    add("--stage-wheel", default=None, help="portable: vlbeam wheel to stage on the workers")
    add("--image", default=None, help="dataflow: worker container image built from Dockerfile")
    add("--gpu", default=None, help="dataflow: accelerator type, e.g. nvidia-l4")
    add("--gpu-count", type=int, default=1)
    add("--flink-master", default=None)
    add("--parallelism", type=int, default=None)
    return parser


def expand_target(argv: list[str]) -> list[str]:
    """Replace `--target X` and its flags with the Beam options they stand for."""
    ns, rest = target_parser().parse_known_args(argv)
    if ns.target is None:
        if ns.workers:
            return local_args(ns.workers) + rest
        return argv
    if ns.target == "local":
        return local_args(ns.workers) + rest
    if ns.target == "portable":
        if not ns.job_endpoint:
            raise ValueError("--target portable needs --job-endpoint HOST:PORT")
        return portable_args(
            ns.job_endpoint, ns.environment_type or "LOOPBACK", ns.environment_config,
            ns.stage_wheel,
        ) + rest  # fmt: skip
    if ns.target == "dataflow":
        if not ns.image:
            raise ValueError("--target dataflow needs --image (the worker image from Dockerfile)")
        return (
            dataflow_args(image=ns.image, gpu=ns.gpu, gpu_count=ns.gpu_count, beam_args=rest) + rest
        )
    if not ns.flink_master:
        raise ValueError("--target flink needs --flink-master HOST:PORT")
    return flink_args(
        master=ns.flink_master, parallelism=ns.parallelism,
        environment=ns.environment_type or "DOCKER", environment_config=ns.environment_config,
    ) + rest  # fmt: skip


__all__ = ["TARGETS", "dataflow_args", "expand_target", "flink_args", "local_args",
           "portable_args"]  # fmt: skip
