"""A misspelled flag stops the run before the job starts (Beam alone would log a warning and run
with defaults); every real vlbeam, Beam and runner flag still passes, and a refused flag's value
is never echoed (it may be a secret)."""

from __future__ import annotations

import argparse

import pytest
from apache_beam.options import pipeline_options as beam_options

from tests.pipeline_helpers import SAMPLES_GLOB
from vlbeam.pipeline.options import VlbeamOptions, refuse_unknown_flags, unknown_flags
from vlbeam.runners import expand_target

SECRET = "hunter2-s3cr3t-value"

# Every options class Beam 2.77 defines for runners, filesystems and workers.
BEAM_OPTION_CLASSES = [
    getattr(beam_options, name)
    for name in (
        "StandardOptions", "StreamingOptions", "CrossLanguageOptions", "TypeOptions",
        "DirectOptions", "GoogleCloudOptions", "AzureOptions", "HadoopFileSystemOptions",
        "WorkerOptions", "DebugOptions", "ProfilingOptions", "SetupOptions", "PortableOptions",
        "JobServerOptions", "FlinkRunnerOptions", "SparkRunnerOptions", "PrismRunnerOptions",
        "TestOptions", "S3Options",
    )
]  # fmt: skip


def flags_of(options_class) -> list[tuple[str, bool]]:
    """(option string, takes a value) for every flag `options_class` defines."""
    parser = beam_options._BeamArgumentParser(allow_abbrev=False)
    options_class._add_argparse_args(parser)
    return [
        (name, action.nargs != 0)
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        for name in action.option_strings
    ]


def test_the_issues_example_is_refused_with_suggestions_and_no_values():
    argv = [f"--input={SAMPLES_GLOB}", "--output=out", "--max-concurency", "64",
            "--windows-seconds", "5"]  # fmt: skip
    assert unknown_flags(argv) == ["--max-concurency", "--windows-seconds"]
    with pytest.raises(ValueError) as info:
        refuse_unknown_flags(argv)
    message = str(info.value)
    assert message.startswith(
        "unknown flag --max-concurency (did you mean --max-concurrency?); "
        "unknown flag --windows-seconds (did you mean --window-seconds?). "
    )
    assert "64" not in message and " 5" not in message


@pytest.mark.parametrize("options_class", BEAM_OPTION_CLASSES, ids=lambda c: c.__name__)
def test_every_beam_and_runner_flag_passes(options_class):
    flags = flags_of(options_class)
    assert flags, options_class
    as_pairs = [t for name, value in flags for t in ([name, "v1"] if value else [name])]
    with_equals = [f"{name}=v2" if value else name for name, value in flags]
    assert unknown_flags(as_pairs) == []
    assert unknown_flags(with_equals) == []
    refuse_unknown_flags(as_pairs)
    refuse_unknown_flags(with_equals)


def test_the_runner_flags_named_in_the_issue_pass():
    argv = [
        "--runner", "FlinkRunner", "--direct_num_workers", "2", "--project", "p",
        "--temp_location=gs://b/tmp", "--flink_master", "jm:8081",
        f"--s3_secret_access_key={SECRET}", "--direct_running_mode=multi_processing",
        "--experiments=a", "--experiments", "b", "--save_main_session",
    ]  # fmt: skip
    assert unknown_flags(argv) == []


def test_every_vlbeam_flag_passes_in_both_spellings():
    flags = flags_of(VlbeamOptions)
    names = {name for name, _ in flags}
    assert {
        "--max-concurrency",
        "--max_concurrency",
        "--window-seconds",
        "--skip-existing",
    } <= names
    argv = [t for name, value in flags for t in ([name, "1"] if value else [name])]
    assert unknown_flags(argv) == []


@pytest.mark.parametrize(
    "target",
    [
        ["--target", "local", "--workers", "2"],
        ["--target", "portable", "--job-endpoint", "localhost:8099", "--environment-type",
         "EXTERNAL", "--worker-pool", "localhost:50000", "--stage-wheel", "dist/v.whl"],
        ["--target", "dataflow", "--image", "img", "--gpu", "nvidia-l4", "--project=p",
         "--region=r", "--temp_location=gs://b/t"],
        ["--target", "flink", "--flink-master", "jm:8081", "--parallelism", "4",
         "--environment-config", "img"],
    ],
    ids=["local", "portable", "dataflow", "flink"],
)  # fmt: skip
def test_what_the_targets_expand_to_passes(target):
    expanded = expand_target([f"--input={SAMPLES_GLOB}", "--output=o", *target])
    assert unknown_flags(expanded) == []


def test_values_are_read_as_argparse_reads_them():
    # a negative number is a value; a switch takes none; `=` carries the value
    assert unknown_flags(["--window-overlap-seconds", "-1", "--stream", "--fps=-2"]) == []
    # the value after a switch is no flag's: refused, without being shown
    with pytest.raises(ValueError, match=r"^1 argument\(s\) that follow no flag") as info:
        refuse_unknown_flags(["--stream", SECRET])
    assert SECRET not in str(info.value)
    # everything after `--` is positional, and vlbeam takes no positional arguments
    with pytest.raises(ValueError, match=r"^2 argument\(s\) that follow no flag"):
        refuse_unknown_flags(["--input=x", "--", "--output", "o"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--pdf-pasword", SECRET],
        [f"--pdf-pasword={SECRET}"],
        ["--api-key", SECRET, "--output=o"],
        [f"--s3_secret_acess_key={SECRET}"],
    ],
)
def test_a_refused_flags_value_is_never_shown(argv):
    with pytest.raises(ValueError, match=r"^unknown flag --") as info:
        refuse_unknown_flags(argv)
    assert SECRET not in str(info.value)
    assert unknown_flags(argv) == [argv[0].split("=")[0]]


def test_suggestions_only_when_something_is_close():
    with pytest.raises(ValueError) as info:
        refuse_unknown_flags(["--pdf-pasword=x", "--zzzzzz", "--s3_secret_acess_key=y"])
    assert str(info.value).startswith(
        "unknown flag --pdf-pasword (did you mean --pdf-password?); unknown flag --zzzzzz; "
        "unknown flag --s3_secret_acess_key (did you mean --s3_secret_access_key?). "
    )


def test_the_cli_refuses_before_the_job_starts(tmp_path, monkeypatch, capsys):
    from vlbeam.pipeline import cli
    from vlbeam.pipeline import run as run_module
    from vlbeam.pipeline.outcome import Outcome

    started = []
    monkeypatch.setattr(run_module, "run", lambda argv, *a, **k: started.append(argv))
    monkeypatch.setattr(run_module, "run_outcome", lambda result, argv: Outcome(0))
    out = tmp_path / "out"
    code = cli.main(["run", f"--input={SAMPLES_GLOB}", f"--output={out}",
                     "--max-concurency", "64", "--windows-seconds", "5"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and started == []
    assert err.startswith(
        "vlbeam: unknown flag --max-concurency (did you mean --max-concurrency?); "
        "unknown flag --windows-seconds (did you mean --window-seconds?). "
    )
    assert err.count("\n") == 1 and "64" not in err and not out.exists()
    # the same command spelled right reaches the job, target flags expanded
    code = cli.main(["run", f"--input={SAMPLES_GLOB}", f"--output={out}",
                     "--max-concurrency", "64", "--window-seconds", "5",
                     "--target", "local", "--workers", "2"])  # fmt: skip
    assert code == 0 and len(started) == 1
    assert "--direct_num_workers=2" in started[0] and "--max-concurrency" in started[0]


def test_run_itself_refuses_a_misspelled_flag_before_any_work(tmp_path):
    from tests.pipeline_helpers import SAMPLES_GLOB, fake_handler, run_job

    out = tmp_path / "out"
    with pytest.raises(ValueError, match="did you mean --max-concurrency"):
        run_job([SAMPLES_GLOB], out, "--max-concurency=64", handler=fake_handler())
    assert not out.exists()


def test_an_explicit_max_batch_size_is_honoured_or_refused_never_replaced(tmp_path, tiny_model):
    """Local models batch exactly --max-batch-size; a backend without batches refuses the flag
    instead of silently running with something else."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from tests.pipeline_helpers import SAMPLES_GLOB, run_job
    from vlbeam.pipeline.options import VlbeamOptions, model_config
    from vlbeam.pipeline.run import make_backend
    from vlbeam.schemas.config import ModelConfig

    opts = PipelineOptions(["--max-batch-size=3"]).view_as(VlbeamOptions)
    assert model_config(opts).max_batch_size == 3
    default = PipelineOptions([]).view_as(VlbeamOptions)
    assert model_config(default).max_batch_size == ModelConfig().max_batch_size
    backend = make_backend(
        PipelineOptions(["--model=tiny-random", "--max-batch-size=3"]).view_as(VlbeamOptions)
    )
    engine = backend.create_engine()  # loads the tiny checkpoint
    assert engine.capacity == 2 * 3
    engine.close()
    for name in ("openai", "vllm"):
        with pytest.raises(ValueError, match="--max-batch-size sets the batch of a local model"):
            run_job([SAMPLES_GLOB], tmp_path / name, f"--backend={name}",
                    "--max-batch-size=4", "--base-url=http://127.0.0.1:9/v1", "--api-key-env=",
                    "--no-preflight")  # fmt: skip
