"""`--skip-existing` skips a file only if it was processed OK by the same model: after a change
of `--model`, every file is processed again (through the real flags and the real backend)."""

from __future__ import annotations

from pathlib import Path

from tests.pipeline_helpers import SAMPLES_GLOB, read_table, run_job

FLAGS = ("--skip-existing", "--max-new-tokens=2", "--target-long-side=256")


def statuses(out: Path, run_id: str) -> dict[str, tuple[str, str]]:
    return {
        Path(d["source_uri"]).name: (d["status"], d["model"])
        for d in read_table(out, "documents")
        if d["run_id"] == run_id
    }


def pages_of(out: Path, run_id: str) -> list[str]:
    return sorted(
        Path(p["source_uri"]).name for p in read_table(out, "pages") if p["run_id"] == run_id
    )


def test_skip_existing_reprocesses_after_a_change_of_model(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    names = ["born_digital.pdf", "scanned_page.pdf"]
    other = str(tiny_model)  # the same weights under another --model: another model

    run_job([SAMPLES_GLOB], out, *FLAGS, "--model=tiny-random", "--run-id=a")
    assert statuses(out, "a") == dict.fromkeys(names, ("ok", "tiny-random"))
    # the same model again: nothing to do (the control: skipping works at all)
    run_job([SAMPLES_GLOB], out, *FLAGS, "--model=tiny-random", "--run-id=b")
    assert statuses(out, "b") == dict.fromkeys(names, ("skipped", "tiny-random"))
    assert pages_of(out, "b") == []
    capsys.readouterr()

    # another --model: every file is processed again, by that model
    run_job([SAMPLES_GLOB], out, *FLAGS, f"--model={other}", "--run-id=c")
    assert statuses(out, "c") == dict.fromkeys(names, ("ok", other))
    assert pages_of(out, "c") == names
    assert {p["model"] for p in read_table(out, "pages") if p["run_id"] == "c"} == {other}
    summary = capsys.readouterr().out
    assert "  documents: 2\n" in summary and "skipped" not in summary

    # and from then on, that model's results count as done
    run_job([SAMPLES_GLOB], out, *FLAGS, f"--model={other}", "--run-id=d")
    assert statuses(out, "d") == dict.fromkeys(names, ("skipped", other))
