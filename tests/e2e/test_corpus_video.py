"""The whole real-file video corpus: good files yield windows, bad ones are accounted for."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.pipeline_helpers import fake_handler, read_table, run_job
from vlbeam.schemas.elements import VLResult

# In good/ but without a picture to look at: must be a clear failure, not windows.
NO_VIDEO = {"mediabunny_multiple-aac-tracks_audio-only.mp4": "NoVideoStream"}
EXPECTED_BAD = {
    "moviepy_result_zero_bytes.webm": "EmptyFile",
    "moviepy_with-attached-pic.mp3": "UnsupportedInput",  # audio with cover art
    "cockatoo_truncated_50pct.mp4": "InvalidVideo",  # no moov atom
    "filetype_fixture-corrupt.mkv": "InvalidVideo",
    "mp4parse_chunk_out_of_range.mp4": "InvalidVideo",
}


# Good files whose frames are more than 1 s apart somewhere (variable frame rate).
GAP_S = {"mediabunny_cursed-vfr.mp4": 1.2}


def no_events(_model, batch, _cfg):
    """A model double that answers every window with an empty event list."""
    return [VLResult(text="[]", input_tokens=len(r.images), output_tokens=1,
                     finish_reason="stop", latency_s=0.0) for r in batch]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_video_in_the_corpus_is_accounted_for(corpus, tmp_path):
    files = sorted(p for p in (corpus / "video").glob("*/*") if p.is_file())
    out = tmp_path / "out"
    run_job(
        [str(corpus / "video/good/*"), str(corpus / "video/bad/*")],
        out,
        "--tasks=grounding",
        "--window-seconds=30",
        "--window-overlap-seconds=2",
        "--fps=1",
        "--max-pixels-per-frame=65536",
        "--decode-timeout-s=60",
        handler=fake_handler(no_events),
    )
    docs = {Path(d["source_uri"]).name: d for d in read_table(out, "documents")}
    assert sorted(docs) == sorted(p.name for p in files)
    windows: dict[str, list[dict]] = defaultdict(list)
    for row in read_table(out, "video_windows"):
        windows[Path(row["source_uri"]).name].append(row)
    failures: dict[str, list[dict]] = defaultdict(list)
    for row in read_table(out, "failures"):
        failures[Path(row["source_uri"]).name].append(row)

    for path in files:
        name, doc = path.name, docs[path.name]
        assert windows[name] or failures[name], f"{name} vanished"
        assert doc["num_failures"] == len(failures[name])
        for failure in failures[name]:
            assert len(failure["message"]) > 10, failure
        if path.parent.name == "good" and name not in NO_VIDEO:
            assert doc["status"] == "ok" and doc["kind"] == "video", (name, failures[name])
            assert doc["duration_s"] > 0
            rows = sorted(windows[name], key=lambda r: r["window_index"])
            assert [r["window_index"] for r in rows] == list(range(len(rows)))
            assert rows[0]["start_s"] == 0 and rows[-1]["end_s"] == pytest.approx(
                doc["duration_s"], abs=1e-3
            )
            for row in rows:
                times = row["frame_times_s"]
                assert times == sorted(times) and len(set(times)) == len(times)
                assert row["start_s"] <= times[0] and times[-1] < row["end_s"]
            # times count from the first frame presented, and the first window starts there
            assert rows[0]["frame_times_s"][0] == 0.0, name
            # a window's first frame is the first at or after its start: less than one
            # frame interval late (1/fps_avg, these files' largest gap), never before it
            for row in rows:
                assert row["frame_times_s"][0] - row["start_s"] < GAP_S.get(name, 1.0), name
    for name, error in {**NO_VIDEO, **EXPECTED_BAD}.items():
        assert [f["error_type"] for f in failures[name]] == [error], name
        assert docs[name]["status"] == "failed"
    # A file whose header promises 1132 s but holds ~4 s: the missing windows are named.
    truncated = failures["filetype_fixture2_truncated.mkv"]
    assert windows["filetype_fixture2_truncated.mkv"] and truncated
    assert all(f["stage"] == "decode" and "window" in f["message"] for f in truncated)
    assert docs["filetype_fixture2_truncated.mkv"]["status"] == "partial"
