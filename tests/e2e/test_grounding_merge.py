"""Spans merged across windows through the job: two spans join when the second starts no
later than one sampling interval (1/--fps) after the first ends; repeated `--query` flags each
get their own events. A model double answers fixed spans per window, so the merge, not the
model, decides what ends up in `video_events`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline_helpers import fake_handler, read_table, run_job
from tests.video_fixtures import constant_rate, write_video
from vlbeam.schemas.elements import VLResult

DOOR, CAR = "a door opens", "a car passes"
# (query number, start, end) answered by the window starting at that time (windows of 16 s
# every 12 s): the door's spans leave a 0.4 s gap between 15.6 s and 16.0 s
SPANS = {
    0.0: [(1, 10.0, 15.6), (2, 2.0, 4.0)],
    12.0: [(1, 16.0, 20.0)],
    24.0: [(2, 25.0, 27.0)],
}


def fixed_spans(_model, batch, _cfg) -> list[VLResult]:
    results = []
    for request in batch:
        assert f"1. {DOOR}\n2. {CAR}" in request.prompt  # both queries, numbered, in order
        spans = SPANS[request.frame_times_s[0]]
        text = json.dumps([{"query": q, "start": a, "end": b, "description": ""}
                           for q, a, b in spans])  # fmt: skip
        results.append(VLResult(text=text, input_tokens=1, output_tokens=1,
                                finish_reason="stop", latency_s=0.0))  # fmt: skip
    return results


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("merge") / "clip.mp4"
    return write_video(path, constant_rate(30, 4), None, size=(64, 48))


@pytest.mark.parametrize(
    ("fps", "door_events"),
    [
        (2, [(10.0, 20.0, [0, 1])]),  # gap 0.4 s <= 1/2 s: one event
        (4, [(10.0, 15.6, [0]), (16.0, 20.0, [1])]),  # gap 0.4 s > 1/4 s: two events
    ],
)
def test_spans_merge_across_one_sampling_interval_per_query(video, tmp_path, fps, door_events):
    out = tmp_path / "out"
    run_job([str(video)], out, "--tasks=grounding", f"--query={DOOR}", f"--query={CAR}",
            "--window-seconds=16", "--window-overlap-seconds=4", f"--fps={fps}",
            handler=fake_handler(fixed_spans))  # fmt: skip
    assert read_table(out, "failures") == []
    assert sorted(w["window_index"] for w in read_table(out, "video_windows")) == [0, 1, 2]
    events = sorted(
        (e["query"], e["start_s"], e["end_s"], e["window_indexes"])
        for e in read_table(out, "video_events")
    )
    assert events == sorted(
        [(DOOR, a, b, w) for a, b, w in door_events]
        + [(CAR, 2.0, 4.0, [0]), (CAR, 25.0, 27.0, [2])]  # far apart: never merged
    )
