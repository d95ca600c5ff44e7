"""`--target local --workers 2` (two SDK worker processes on this machine) gives the same rows
as the in-process run, with the real tiny model loaded once in each worker process and never
in the launcher. The model is the sharp tiny checkpoint (tests/sharp_model.py), whose answers
depend on each page and window, so equal texts mean something."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest

from tests.pipeline_helpers import read_table
from tests.video_fixtures import constant_rate, write_video
from vlbeam.pipeline.run import run
from vlbeam.runners import expand_target
from vlbeam.schemas import TABLES
from vlbeam.schemas.config import ModelConfig
from vlbeam.transforms.backends.qwen_transformers import TransformersQwenHandler, load_qwen

REPO = Path(__file__).resolve().parents[2]
VOLATILE = {"latency_s"}  # wall-clock measurements differ between runs


def logged_load(log: str, cfg: ModelConfig):
    """vlbeam's own loader, after writing the loading process's id to `log`."""
    with open(log, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    return load_qwen(cfg)


def loads(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def backend(model: Path, log: Path) -> TransformersQwenHandler:
    # one request per generate call: identical greedy outputs whatever the batching
    cfg = ModelConfig(model=str(model), max_new_tokens=4, max_batch_size=1)
    return TransformersQwenHandler(cfg, loader=functools.partial(logged_load, str(log)))


def comparable(out: Path, table: str) -> list[tuple]:
    rows = read_table(out, table)
    keys = [k for k in TABLES[table].names if k not in VOLATILE]
    return sorted(tuple(repr(row[k]) for k in keys) for row in rows)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_local_workers_equal_the_in_process_run(sharp_model, corpus, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("born_digital.pdf", "scanned_page.pdf"):
        shutil.copy(REPO / "samples" / name, inputs / name)
    shutil.copy(corpus / "pdf/good/pdfjs_vertical.pdf", inputs / "vertical.pdf")  # 3 pages
    shutil.copy(corpus / "pdf/bad/tracemonkey_truncated_50pct.pdf", inputs / "broken.pdf")
    write_video(inputs / "clip.mp4", constant_rate(6, 10), (2.0, 4.0))
    job = [
        f"--input={inputs}/*", "--max-new-tokens=4", "--target-long-side=384",
        "--pages-per-task=2", "--window-seconds=4", "--window-overlap-seconds=1",
        "--max-pixels-per-frame=16384", "--run-id=same-run",
    ]  # fmt: skip

    model = sharp_model
    in_process, log_1 = tmp_path / "in_process", tmp_path / "loads-in-process.log"
    run([*job, f"--output={in_process}"], model_handler=backend(model, log_1))
    summary_1 = capsys.readouterr().out
    assert loads(log_1) == [os.getpid()]  # the in-process runner: here, once
    assert "  model loads: 1 (one per worker process)" in summary_1

    workers, log_2 = tmp_path / "workers", tmp_path / "loads-workers.log"
    argv = expand_target([*job, f"--output={workers}", "--target", "local", "--workers", "2"])
    assert "--direct_num_workers=2" in argv
    run(argv, model_handler=backend(model, log_2))
    summary_2 = capsys.readouterr().out

    # one load in each of two worker processes, none in the launcher
    pids = loads(log_2)
    assert len(pids) == 2 and len(set(pids)) == 2 and os.getpid() not in pids, pids
    assert "  model loads: 2 (one per worker process)" in summary_2
    for table in TABLES:
        assert comparable(workers, table) == comparable(in_process, table), table
    docs = read_table(workers, "documents")
    assert len(docs) == 5 and len(read_table(workers, "pages")) == 5
    assert read_table(workers, "video_windows") and read_table(workers, "failures")
    texts = [p["text"] for p in read_table(workers, "pages")]
    assert len(set(texts)) > 1, texts  # answers depend on the page: equal rows mean something
