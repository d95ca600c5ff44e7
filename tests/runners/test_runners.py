"""Runner targets build the Beam options they should; the worker image installs what the
pipeline imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from vlbeam.runners import expand_target

REPO = Path(__file__).resolve().parents[2]


def options(argv: list[str]) -> PipelineOptions:
    return PipelineOptions(expand_target(argv))


def test_local_in_process_and_multi_process():
    opts = options(["--target", "local", "--input", "x"])
    assert opts.view_as(StandardOptions).runner == "FnApiRunner"
    opts = options(["--target", "local", "--workers", "3"])
    direct = opts.view_as(DirectOptions)
    assert direct.direct_running_mode == "multi_processing" and direct.direct_num_workers == 3
    assert expand_target(["--input", "x"]) == ["--input", "x"]  # no target: untouched
    with pytest.raises(ValueError, match=r"^--workers must be >= 1$"):
        expand_target(["--target", "local", "--workers", "0"])


def test_portable_external_with_staged_wheel():
    opts = options([
        "--target", "portable", "--job-endpoint", "localhost:8099", "--environment-type",
        "external", "--worker-pool", "localhost:50000", "--stage-wheel", "dist/v.whl",
    ])  # fmt: skip
    portable = opts.view_as(PortableOptions)
    assert opts.view_as(StandardOptions).runner == "PortableRunner"
    assert portable.job_endpoint == "localhost:8099"
    assert portable.environment_type == "EXTERNAL"
    assert portable.environment_config == "localhost:50000"
    assert opts.view_as(SetupOptions).extra_packages == ["dist/v.whl"]
    with pytest.raises(ValueError, match="worker-pool"):
        expand_target(["--target", "portable", "--job-endpoint", "h:1",
                       "--environment-type", "EXTERNAL"])  # fmt: skip


def test_dataflow_gpu_workers():
    opts = options([
        "--target", "dataflow", "--image", "us-docker.pkg.dev/p/r/vlbeam:0.1", "--gpu",
        "nvidia-l4", "--project=p", "--region=us-central1", "--temp_location=gs://b/tmp",
        "--max_num_workers=4",
    ])  # fmt: skip
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    gcp = opts.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == ("p", "us-central1", "gs://b/tmp")
    assert gcp.dataflow_service_options == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
    ]
    worker = opts.view_as(WorkerOptions)
    assert worker.sdk_container_image == "us-docker.pkg.dev/p/r/vlbeam:0.1"
    assert worker.machine_type == "g2-standard-8" and worker.max_num_workers == 4
    assert "no_use_multiple_sdk_containers" in opts.view_as(DebugOptions).experiments
    assert opts.view_as(SetupOptions).sdk_location == "container"


def test_dataflow_cpu_workers_for_the_http_backend():
    opts = options([
        "--target", "dataflow", "--image", "img", "--project=p", "--region=r",
        "--temp_location=gs://b/t", "--machine_type=e2-standard-4", "--backend=openai",
    ])  # fmt: skip
    gcp = opts.view_as(GoogleCloudOptions)
    assert not gcp.dataflow_service_options
    assert opts.view_as(WorkerOptions).machine_type == "e2-standard-4"
    assert "no_use_multiple_sdk_containers" not in (opts.view_as(DebugOptions).experiments or [])
    with pytest.raises(ValueError, match="--temp_location"):
        expand_target(["--target", "dataflow", "--image", "i", "--project=p", "--region=r"])
    with pytest.raises(ValueError, match="--image"):
        expand_target(["--target", "dataflow"])


def test_flink_cluster():
    opts = options([
        "--target", "flink", "--flink-master", "flink-jm:8081", "--parallelism", "8",
        "--environment-config", "us-docker.pkg.dev/p/r/vlbeam:0.1",
    ])  # fmt: skip
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    assert opts.view_as(StandardOptions).runner == "FlinkRunner"
    flink = opts.view_as(FlinkRunnerOptions)
    assert flink.flink_master == "flink-jm:8081" and flink.parallelism == 8
    portable = opts.view_as(PortableOptions)
    assert portable.environment_type == "DOCKER"
    assert portable.environment_config == "us-docker.pkg.dev/p/r/vlbeam:0.1"
    with pytest.raises(ValueError, match="environment-config"):
        expand_target(["--target", "flink", "--flink-master", "m:1"])


# ---------------------------------------------------------------- the worker image


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_dockerfile_installs_vlbeam_with_every_runtime_extra():
    project = _pyproject()["project"]
    docker = _dockerfile()
    match = re.search(r'pip install -c /src/constraints.txt "/src\[([a-z0-9_,]+)\]"', docker)
    assert match, "the image must pip-install vlbeam from its own source"
    installed = set(match.group(1).split(","))
    runtime_extras = set(project["optional-dependencies"]) - {"dev", "all"}
    assert installed == runtime_extras
    # every package folder of the wheel is copied into the build context
    for folder in _pyproject()["tool"]["setuptools"]["package-dir"].values():
        assert re.search(rf"^COPY {folder} /src/{folder}$", docker, re.M), folder
    assert "poppler-utils" in docker  # --pdf-renderer pdf2image
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in docker


def test_dockerfile_beam_and_python_match_the_project():
    from packaging.specifiers import SpecifierSet

    docker = _dockerfile()
    beam = re.search(r"ARG BEAM_VERSION=(\S+)", docker).group(1)
    python = re.search(r"ARG PYTHON_VERSION=(\S+)", docker).group(1)
    spec = next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("apache-beam"))
    assert beam in SpecifierSet(spec.removeprefix("apache-beam"))
    assert beam == metadata.version("apache-beam"), "workers must run the launcher's Beam"
    assert f"{python}.0" in SpecifierSet(_pyproject()["project"]["requires-python"])


def _third_party_imports() -> set[str]:
    found: set[str] = set()
    for folder in ("pipeline", "transforms", "schemas", "runners"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "vlbeam"}


def test_every_import_of_the_pipeline_is_a_declared_dependency():
    """What the image installs (vlbeam's dependencies + runtime extras) covers every module
    the code imports, so nothing works only in the launcher's environment."""
    project = _pyproject()["project"]
    declared = [*project["dependencies"]]
    for extra, deps in project["optional-dependencies"].items():
        if extra not in ("dev", "all"):
            declared += deps
    names = {re.split(r"[<>=\[ ;!~]", d, maxsplit=1)[0].lower() for d in declared}
    providers = metadata.packages_distributions()
    transitive = {"huggingface_hub": "transformers", "tokenizers": "transformers"}
    for module in sorted(_third_party_imports()):
        dists = {d.lower() for d in providers.get(module, [])}
        assert dists & names or transitive.get(module) in names, (
            f"{module} (from {dists}) is imported but not declared in pyproject.toml"
        )


# ---------------------------------------------------------------- pinned installs


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt must pin exact versions: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _install_lines(text: str) -> list[str]:
    """Commands that install vlbeam's environment (the vLLM server's own venv, which can't
    share Beam's pins, is pinned on its own)."""
    return [
        line
        for line in text.splitlines()
        if re.search(r"\bpip install\b", line)
        and not line.lstrip().startswith("#")
        and "vllm" not in line.lower()
    ]


def test_readme_ci_and_image_install_from_the_same_constraints():
    readme_install = (REPO / "README.md").read_text().split("```bash", 1)[1].split("```")[0]
    sources = {
        "README": readme_install,
        ".ci/run": (REPO / ".ci" / "run").read_text(),
        "Dockerfile": _dockerfile(),
    }
    for name, text in sources.items():
        lines = [ln for ln in _install_lines(text) if "--upgrade pip" not in ln]
        lines = [ln for ln in lines if " -U pip" not in ln]
        assert lines, name
        for line in lines:
            assert re.search(r"-c (/src/)?constraints\.txt", line), f"{name}: {line.strip()}"


def test_constraints_pin_every_dependency_within_the_ranges():
    """Every dependency of every extra is pinned, inside pyproject's range, and the pins are
    what this environment runs (the suite passes with exactly these versions)."""
    from packaging.requirements import Requirement

    pins = _pins()
    project = _pyproject()["project"]
    declared = [*project["dependencies"]]
    for extra, deps in project["optional-dependencies"].items():
        if extra != "all":
            declared += deps
    for spec in declared:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert pins[name] in req.specifier, f"{name}=={pins[name]} is outside {req.specifier}"
        assert metadata.version(req.name) == pins[name], f"installed {req.name} is not the pin"
