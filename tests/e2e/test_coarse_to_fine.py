# ruff: noqa: E402  (the test dependency check runs before the imports that need it)
"""Coarse-to-fine grounding end to end, through `vlbeam run` and an HTTP server whose model
double really reads the frames it is sent (tests/frame_reader.py): short generated videos with
coloured squares at known times, both strategies, the window and event rows they write, and
what was sent."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.conftest import require_module

require_module("aiohttp", "openai")

from tests.fake_api_server import FakeApiServer
from tests.frame_reader import Event, FrameReader, write_event_video
from tests.pipeline_helpers import read_table, run_job

QUERIES = ["a red square", "a blue square", "a green square"]  # nothing green is ever shown
EVENTS = [Event("red", 12.0, 15.0), Event("blue", 38.0, 44.0, x=100, y=40)]
# coarse windows 0-40, 39-79, 78-90 s: the blue square shows in the overlap of the first two
COMMON = ["--tasks=grounding", "--window-seconds=10", "--window-overlap-seconds=1",
          *(f"--query={q}" for q in QUERIES)]  # fmt: skip
COARSE = ["--grounding-strategy=coarse-to-fine", "--coarse-window-seconds=40", "--coarse-fps=0.5",
          "--refine-margin-s=2"]  # fmt: skip


def api_args(server) -> list[str]:
    return ["--backend=openai", "--provider=openai", "--api-model=m", "--no-preflight",
            f"--base-url={server.base_url}", "--api-key-env="]  # fmt: skip


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    write_event_video(folder / "events.mp4", 90.0, EVENTS)
    write_event_video(folder / "nothing.mp4", 90.0, [])
    return folder


def run(videos: Path, out: Path, *extra: str, reader: FrameReader | None = None):
    reader = reader or FrameReader()
    with FakeApiServer(reader) as server:
        run_job([str(videos / "*.mp4")], out, *api_args(server), *COMMON, *extra)
    return reader


def by_video(rows: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(Path(row["source_uri"]).name, []).append(row)
    return found


def spans(events: list[dict]) -> dict[str, tuple[float, float]]:
    return {e["query"]: (e["start_s"], e["end_s"]) for e in events}


@pytest.fixture(scope="module")
def dense(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("dense") / "out"
    return out, run(videos, out)


@pytest.fixture(scope="module")
def coarse_to_fine(videos, tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("c2f") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        reader = run(videos, out, *COARSE)
    return out, reader, printed.getvalue()


def test_coarse_to_fine_finds_what_dense_finds_for_a_fraction_of_the_frames(dense, coarse_to_fine):
    dense_out, dense_reader = dense
    out, reader, summary = coarse_to_fine

    truth = {"a red square": (12.0, 15.0), "a blue square": (38.0, 44.0)}
    dense_events = by_video(read_table(dense_out, "video_events"))
    events = by_video(read_table(out, "video_events"))
    assert spans(dense_events["events.mp4"]) == truth
    assert spans(events["events.mp4"]) == truth  # the green square: no event
    assert len(events["events.mp4"]) == 2 and "nothing.mp4" not in events

    windows = by_video(read_table(out, "video_windows"))
    passes = {name: [(w["grounding_pass"], w["window_index"]) for w in rows]
              for name, rows in windows.items()}  # fmt: skip
    # the video where nothing happens: only its three coarse windows were sent
    assert sorted(passes["nothing.mp4"]) == [("coarse", 0), ("coarse", 1), ("coarse", 2)]
    assert all(w["candidate_queries"] == [] for w in windows["nothing.mp4"])
    coarse = sorted(
        (w for w in windows["events.mp4"] if w["grounding_pass"] == "coarse"),
        key=lambda w: w["window_index"],
    )
    refine = sorted(
        (w for w in windows["events.mp4"] if w["grounding_pass"] == "refine"),
        key=lambda w: w["window_index"],
    )
    # the coarse rows say which queries may happen where: never the green square
    assert [w["candidate_queries"] for w in coarse] == [
        ["a red square", "a blue square"], ["a blue square"], []
    ]  # fmt: skip
    assert all(w["coarse_windows"] is None for w in coarse)
    assert all(w["prompt_id"] == "coarse_query_v1" for w in coarse)
    assert all(w["prompt_id"] == "grounding_query_v1" for w in refine)
    # refine windows: the candidates (seen at 12, 14; 38 | 39, 41, 43 s, each to the next coarse
    # frame) widened by 2 s, merged, cut into 10 s windows overlapping by 1 s
    assert [(w["start_s"], w["end_s"], w["coarse_windows"]) for w in refine] == [
        (10.0, 18.0, [0]), (36.0, 46.0, [0, 1]), (45.0, 47.0, [0, 1])
    ]  # fmt: skip
    assert all(w["frame_times_s"][0] == w["start_s"] for w in refine)
    assert all(len(w["frame_times_s"]) == (w["end_s"] - w["start_s"]) * 2 for w in refine)
    # each event lists the refine windows it came from and the coarse windows behind them
    ev = {e["query"]: e for e in events["events.mp4"]}
    assert ev["a red square"]["window_indexes"] == [0]
    assert ev["a red square"]["coarse_window_indexes"] == [0]
    assert ev["a blue square"]["coarse_window_indexes"] == [0, 1]
    assert all(e["coarse_window_indexes"] is None for e in dense_events["events.mp4"])
    assert {w["grounding_pass"] for w in read_table(dense_out, "video_windows")} == {"dense"}

    # what was sent: every frame of the coarse pass at 0.5 fps, then the refine windows'
    coarse_frames = 2 * (20 + 20 + 6)
    refine_frames = sum(w["num_frames"] for w in refine)
    assert reader.frames == coarse_frames + refine_frames == 92 + 40
    assert dense_reader.frames == 2 * (9 * 20 + 18)  # windows every 9 s, the last 9 s long
    assert reader.frames * 3 <= dense_reader.frames  # a third, on so short a video
    assert reader.calls == 6 + 3
    docs = {Path(d["source_uri"]).name: d["status"] for d in read_table(out, "documents")}
    assert docs == {"events.mp4": "ok", "nothing.mp4": "ok"}
    assert read_table(out, "failures") == []
    assert "  model loads: 1 (one per worker process)" in summary  # one engine, both passes
    assert "  video:     9 windows grounded of 9 decoded (132 frames)" in summary
    assert (
        f"  passes:    coarse {coarse_frames} frames (6 calls), refine {refine_frames} frames "
        f"(3 calls): {coarse_frames + refine_frames} frames sent where dense would send "
        f"{dense_reader.frames} ({(coarse_frames + refine_frames) / dense_reader.frames:.1%})"
    ) in summary


def test_a_coarse_answer_nobody_can_read_is_refined_whole(videos, tmp_path):
    """The coarse answer for the second window of each video is prose without a time: the
    whole window is refined (every query), so nothing that happens there is skipped."""

    def second_coarse_window(rec) -> bool:
        times = [t for t, _ in rec.timed_frames]
        return "may match" in " ".join(rec.texts) and times[0] == 39.0

    reader = FrameReader(garble=second_coarse_window)
    run(videos, tmp_path / "out", *COARSE, reader=reader)
    windows = by_video(read_table(tmp_path / "out", "video_windows"))
    for name in ("events.mp4", "nothing.mp4"):
        unread = [w for w in windows[name] if w["grounding_pass"] == "coarse"]
        assert sorted(w["window_index"] for w in unread) == [0, 1, 2]
        [second] = [w for w in unread if w["window_index"] == 1]
        assert second["candidate_queries"] == QUERIES  # unread: any query may happen there
        refine = [w for w in windows[name] if w["grounding_pass"] == "refine"]
        covered = sorted((w["start_s"], w["end_s"]) for w in refine if 1 in w["coarse_windows"])
        assert covered[0][0] <= 39.0 and covered[-1][1] >= 79.0
        assert all(b[0] <= a[1] for a, b in itertools.pairwise(covered))
    events = by_video(read_table(tmp_path / "out", "video_events"))
    assert spans(events["events.mp4"]) == {
        "a red square": (12.0, 15.0), "a blue square": (38.0, 44.0)
    }  # fmt: skip
    assert "nothing.mp4" not in events
    assert read_table(tmp_path / "out", "failures") == []


def test_the_event_timeline_stays_dense(videos, tmp_path, caplog):
    with FakeApiServer(FrameReader()) as server:
        run_job(
            [str(videos / "nothing.mp4")], tmp_path / "out", *api_args(server),
            "--tasks=grounding", "--window-seconds=30", *COARSE,
        )  # fmt: skip
        prompts = [" ".join(r.texts) for r in server.model_requests()]
    rows = read_table(tmp_path / "out", "video_windows")
    # windows of 30 s every 26 s at 2 fps, as without the flag, and no coarse prompt sent
    assert {r["grounding_pass"] for r in rows} == {"dense"}
    assert sorted(r["num_frames"] for r in rows) == [24, 60, 60, 60]
    assert len(prompts) == 4 and not any("may match" in p for p in prompts)
    assert "the event timeline is grounded densely" in caplog.text


def test_compaction_the_warehouse_and_the_report_see_the_passes(coarse_to_fine, dense, tmp_path):
    import shutil

    import duckdb

    from vlbeam.outputs import report as rep
    from vlbeam.outputs.compact import compact
    from vlbeam.outputs.load_duckdb import load_duckdb

    out = tmp_path / "out"
    shutil.copytree(coarse_to_fine[0], out)
    before = sorted(map(str, read_table(out, "video_windows")), key=str)
    compact(str(out), compaction_id="c1")
    assert sorted(map(str, read_table(out, "video_windows")), key=str) == before
    load_duckdb(str(out), str(tmp_path / "db.duckdb"))
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        passes = con.execute(
            "SELECT grounding_pass, count(*), sum(num_frames) FROM video_windows "
            "GROUP BY ALL ORDER BY 1"
        ).fetchall()
        coarse = con.execute(
            "SELECT coarse_window_indexes FROM video_events WHERE query = 'a blue square'"
        ).fetchall()
    assert passes == [("coarse", 6, 92), ("refine", 3, 40)]
    assert coarse == [([0, 1],)]

    report = rep.build_report(str(coarse_to_fine[0]), str(tmp_path / "r.html"))
    assert dict(report.summary.frames_by_pass) == {"coarse": 92, "refine": 40}
    assert report.summary.dense_frames == dense[1].frames == 396
    html = (tmp_path / "r.html").read_text()
    assert 'data-metric="frames"' in html
    assert "coarse 92 · refine 40; dense would send 396 (33.3%)" in html
    # the video's timeline draws the windows that grounded its events (the refine pass's)
    [events_view] = [v for v in report.videos if v.doc.source_uri.endswith("events.mp4")]
    assert [(w.start_s, w.end_s) for w in events_view.windows] == [
        (10.0, 18.0), (36.0, 46.0), (45.0, 47.0)
    ]  # fmt: skip
