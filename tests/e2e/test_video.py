"""Video: exact frame times, windows, grounding through the pipeline, merging."""

from __future__ import annotations

import functools
import io
import json
import math
import random
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.pipeline_helpers import fake_handler, read_table, run_job
from tests.video_fixtures import RED, constant_rate, frame_with_square, is_red, write_video
from vlbeam.schemas.elements import SourceFile, VLResult
from vlbeam.transforms.backends.qwen_transformers import processor_inputs
from vlbeam.transforms.media.video_decode import (
    SamplingConfig,
    open_container,
    probe,
    sample_window,
    target_times,
)
from vlbeam.transforms.media.work_units import VideoConfig, plan_windows


def top_right_square(width: int, height: int, red: bool):
    image = frame_with_square(width, height, False)
    if red:
        image[: height // 2, width // 2 :] = RED
    return image


STAMP = re.compile(r"<(\d+(?:\.\d+)?) seconds>")


def clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"


def patch_stamps(frame_times: list[float]) -> list[float]:
    """The `<t seconds>` Qwen3-VL writes for these frames: one per temporal patch of two
    frames (an odd last frame is repeated), the mean of their times, one decimal."""
    times = list(frame_times) + list(frame_times[-1:]) * (len(frame_times) % 2)
    return [float(f"{(times[i] + times[i + 1]) / 2:.1f}") for i in range(0, len(times), 2)]


def double_span(stamps: list[float], reds: list[bool]) -> tuple[float, float] | None:
    """The event the reading double reports for patch stamps and red frames: it starts half
    a frame interval before the first red patch's stamp and lasts until one interval after
    the last one's (a patch stamp is the mean time of its two frames)."""
    reds = reds + reds[-1:] * (len(reds) % 2)  # the processor pads to whole patches
    patches = [reds[i] or reds[i + 1] for i in range(0, len(reds), 2)]
    assert len(stamps) == len(patches)
    red_stamps = [t for t, red in zip(stamps, patches, strict=True) if red]
    if not red_stamps:
        return None
    interval = (stamps[1] - stamps[0]) / 2 if len(stamps) > 1 else 0.5
    return red_stamps[0] - interval / 2, red_stamps[-1] + interval


def first_frames(times: list[float], start: float, end: float, fps: float) -> list[float]:
    """The oracle: for each sampling instant of [start, end), the first of `times` at or
    after it, each once."""
    out: list[float] = []
    for instant in target_times(start, end, SamplingConfig(fps=fps)):
        later = [t for t in times if t >= instant - 1e-6]
        if later and min(later) < end and (not out or min(later) > out[-1]):
            out.append(min(later))
    return out


def expected_event(windows: list[dict], times: list[float], red, fps: float):
    """What the double must report over these windows if each got exactly the oracle's
    frames: the union of the windows' spans."""
    spans = []
    for w in windows:
        frames = first_frames(times, w["start_s"], w["end_s"], fps)
        span = double_span(patch_stamps(frames), [red(t) for t in frames])
        if span is not None:
            spans.append(span)
    return min(s for s, _ in spans), max(e for _, e in spans)


@functools.cache
def processor_of(model_dir: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_dir)


def reading_model(model_dir: Path):
    """A test double of Qwen3-VL that reads what it is given: it builds the real prompt
    with the real processor (of the checkpoint in `model_dir`, loaded once per process: the
    double is pickled with every bundle's DoFn, so it carries the path, not the processor),
    reads the timestamps written before each temporal patch, looks at the frames, and
    answers in the cookbook's event format."""

    def infer(_model, batch, _cfg):
        processor = processor_of(str(model_dir))
        results = []
        for request in batch:
            inputs = processor_inputs(processor, [request])
            prompt = processor.tokenizer.decode(inputs["input_ids"][0])
            stamps = [float(s) for s in STAMP.findall(prompt)]
            reds = [is_red(Image.open(io.BytesIO(f))) for f in request.images]
            answer = {}
            span = double_span(stamps, reds)
            if span is not None:
                answer = {f"{clock(span[0])} - {clock(span[1])}": "a red square is shown"}
            size = Image.open(io.BytesIO(request.images[0])).size
            results.append(
                VLResult(
                    text=json.dumps(answer) if answer else f"none ({size[0]}x{size[1]})",
                    input_tokens=int(inputs["attention_mask"].sum()),
                    output_tokens=5,
                    finish_reason="stop",
                    latency_s=0.0,
                )
            )
        return results

    return infer


@pytest.fixture(scope="module")
def tiny_processor(tiny_model):
    return processor_of(str(tiny_model))


def grounding_handler(model_dir: Path):
    return fake_handler(reading_model(model_dir), model="reading-double")


def test_frame_times_are_true_presentation_times_on_vfr(tmp_path):
    rng = random.Random(7)
    times = [0.0]
    while times[-1] < 12:
        times.append(round(times[-1] + rng.uniform(0.04, 1.2), 3))
    path = write_video(tmp_path / "vfr.mp4", times, None)
    container = open_container(str(path))
    info = probe(container)
    frames, errors = sample_window(container, info, 2.0, 9.0, SamplingConfig(fps=2))
    assert errors == 0 and frames
    got = [f.time_s for f in frames]
    # Every sampled time is the exact time of a frame that was written...
    assert all(min(abs(t - w) for w in times) < 1e-3 for t in got)
    # ...the first one presented at or after each sampling instant, each frame once.
    expected = []
    for target in target_times(2.0, 9.0, SamplingConfig(fps=2)):
        first = next(w for w in times if w >= target - 1e-6)
        if first < 9.0 and first not in expected:
            expected.append(first)
    assert got == pytest.approx(expected, abs=1e-3)
    # first and last: the first frame at or after 2.0 s, the last frame before 9.0 s
    assert got[0] == pytest.approx(next(w for w in times if w >= 2.0), abs=1e-3)
    last_instant = target_times(2.0, 9.0, SamplingConfig(fps=2))[-1]
    assert got[-1] == pytest.approx(min(w for w in times if w >= last_instant), abs=1e-3)
    assert got[-1] == pytest.approx(max(w for w in times if w < 9.0), abs=1e-3)


def test_sampling_modes_are_validated():
    assert SamplingConfig().mode == "frames"
    assert SamplingConfig(mode="keyframes").mode == "keyframes"
    with pytest.raises(ValueError, match="sampling mode"):
        SamplingConfig(mode="keyframe")
    with pytest.raises(ValueError):
        SamplingConfig(fps=0)


def test_the_sampling_flag_reaches_the_sampling_config():
    from apache_beam.options.pipeline_options import PipelineOptions

    from vlbeam.pipeline.options import VlbeamOptions, video_config

    opts = PipelineOptions(["--sampling=keyframes", "--fps=0.5"]).view_as(VlbeamOptions)
    assert video_config(opts).sampling == SamplingConfig(fps=0.5, mode="keyframes")
    assert video_config(PipelineOptions([]).view_as(VlbeamOptions)).sampling.mode == "frames"


def test_the_first_window_starts_at_the_first_frame(tmp_path):
    """A stream whose first frame is at 11.4 s on its clock (as MPEG-TS often is), with
    10 s GOPs: times count from that frame, and the first window's first sample is it."""
    from fractions import Fraction

    from tests.video_fixtures import read_stamp, write_stamped

    times = [11.4 + i / 25 for i in range(25 * 25)]
    x264 = {"x264-params": "keyint=250:min-keyint=250:scenecut=0"}
    path = write_stamped(
        tmp_path / "late.ts", times, fmt="mpegts", time_base=Fraction(1, 90000), codec_options=x264
    )
    container = open_container(str(path))
    info = probe(container)
    assert info.duration_s == pytest.approx(25.0, abs=0.05)
    for start, end in ((7.0, 14.0), (0.0, 7.0), (21.0, info.duration_s)):  # after, before, last
        frames, errors = sample_window(container, info, start, end, SamplingConfig(fps=2))
        assert errors == 0
        # frames every 0.04 s: the first at or after each instant is the next on that grid
        instants = target_times(start, end, SamplingConfig(fps=2))
        expected = [math.ceil(round(t * 25, 6)) / 25 for t in instants]
        assert [f.time_s for f in frames] == pytest.approx(expected, abs=1e-6)
        assert frames[0].time_s == pytest.approx(start, abs=1e-6)  # every start is on the grid
        # each frame is the one presented then (frame i shows i, presented at i / 25 s)
        assert [read_stamp(Image.open(io.BytesIO(f.image))) for f in frames] == [
            round(f.time_s * 25) for f in frames
        ]


def test_keyframe_mode_keeps_the_first_keyframe_at_or_after_each_instant(tmp_path):
    path = write_video(tmp_path / "k.mp4", constant_rate(30, 10), None, gop=25)  # keys 2.5 s apart
    container = open_container(str(path))
    info = probe(container)
    frames, _ = sample_window(container, info, 3.0, 14.0, SamplingConfig(fps=2, mode="keyframes"))
    assert [f.time_s for f in frames] == pytest.approx([5.0, 7.5, 10.0, 12.5])
    # fps bounds the density: at 0.25 fps (instants 3, 7, 11) only the keyframes after them
    frames, _ = sample_window(
        container, info, 3.0, 14.0, SamplingConfig(fps=0.25, mode="keyframes")
    )
    assert [f.time_s for f in frames] == pytest.approx([5.0, 7.5, 12.5])
    # a window with no keyframe in it gets its first instant's frame
    frames, _ = sample_window(container, info, 5.1, 7.4, SamplingConfig(fps=2, mode="keyframes"))
    assert [f.time_s for f in frames] == pytest.approx([5.1])


def test_keyframe_sampling_through_the_job(tmp_path):
    """`--sampling keyframes` reaches the decoder: each window holds the keyframes in it
    (one every 2.5 s here), each at its true time, however dense --fps asks."""
    video = write_video(tmp_path / "in" / "k.mp4", constant_rate(30, 10), None, gop=25)
    out = tmp_path / "out"
    run_job([str(video)], out, "--tasks=grounding", "--sampling=keyframes", "--fps=2",
            "--window-seconds=16", "--window-overlap-seconds=4",
            handler=fake_handler(no_answer))  # fmt: skip
    windows = sorted(read_table(out, "video_windows"), key=lambda r: r["window_index"])
    assert [w["frame_times_s"] for w in windows] == [
        [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0],
        [12.5, 15.0, 17.5, 20.0, 22.5, 25.0, 27.5],
        [25.0, 27.5],
    ]


def no_answer(_model, batch, _cfg):
    return [VLResult(text="[]", input_tokens=1, output_tokens=1, finish_reason="stop",
                     latency_s=0.0) for _ in batch]  # fmt: skip


def test_prompt_timestamps_come_from_true_frame_times(tiny_processor):
    """What the model reads: one `<t seconds>` per temporal patch of two frames, t being
    the mean of the two frames' true times (Qwen3-VL's own convention), absolute."""
    from vlbeam.schemas.elements import VLRequest

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="JPEG")
    times = (61.0, 61.7, 62.13, 63.0, 64.9)  # irregular, absolute, odd count
    request = VLRequest(images=(buf.getvalue(),) * 5, prompt="x", frame_times_s=times)
    inputs = processor_inputs(tiny_processor, [request])
    prompt = tiny_processor.tokenizer.decode(inputs["input_ids"][0])
    assert [float(s) for s in STAMP.findall(prompt)] == [61.4, 62.6, 64.9]


def test_windows_cover_the_video_with_overlap():
    source = SourceFile("v.mp4", "0" * 64, "video", 1)
    windows = plan_windows(source, 130.0, VideoConfig(window_s=60, overlap_s=5))
    assert [(w.start_s, w.end_s) for w in windows] == [(0, 60), (55, 115), (110, 130)]
    assert plan_windows(source, 30.0, VideoConfig())[0].end_s == 30.0


def test_grounding_finds_the_event_at_the_right_absolute_time(tmp_path, tiny_model):
    """A red square from 12.0 s to 17.5 s, across a window boundary: the pipeline reports
    it at the right absolute times (within one sampling interval), merged across windows."""
    video = write_video(tmp_path / "in" / "clip.mp4", constant_rate(40, 10), (12.0, 17.5))
    out = tmp_path / "out"
    run_job(
        [str(video)], out, "--tasks=grounding", "--query=red square",
        "--window-seconds=16", "--window-overlap-seconds=4", "--fps=2",
        handler=grounding_handler(tiny_model),
    )  # fmt: skip
    windows = sorted(read_table(out, "video_windows"), key=lambda r: r["window_index"])
    [doc] = read_table(out, "documents")
    assert 39.9 < doc["duration_s"] <= 40.0  # the last frame, at 39.9 s, lies inside
    assert [(w["start_s"], w["end_s"]) for w in windows] == [
        (0, 16),
        (12, 28),
        (24, pytest.approx(doc["duration_s"], abs=1e-6)),
    ]
    # every instant gets the frame presented then (frames every 0.1 s), first and last too
    for w, first, last in zip(windows, (0.0, 12.0, 24.0), (15.5, 27.5, 39.5), strict=True):
        assert w["frame_times_s"] == pytest.approx([first + i / 2 for i in range(32)])
        assert (w["frame_times_s"][0], w["frame_times_s"][-1]) == (first, last)
        assert w["num_frames"] == 32 and w["prompt_id"] == "grounding_query_v1"
    [event] = read_table(out, "video_events")
    assert event["query"] == "red square"
    assert event["window_indexes"] == [0, 1]
    # exactly what the double reads from the true frames (its answer has 0.01 s steps)...
    expected = expected_event(windows, constant_rate(40, 10), lambda t: 12.0 <= t < 17.5, 2)
    assert (event["start_s"], event["end_s"]) == pytest.approx(expected, abs=0.011)
    # ...which is well within one sampling interval (0.5 s) of the truth
    assert abs(event["start_s"] - 12.0) <= 0.1 and abs(event["end_s"] - 17.5) <= 0.25
    assert doc["kind"] == "video" and doc["status"] == "ok" and doc["num_pages"] is None
    assert read_table(out, "failures") == []


def test_variable_frame_rate_and_rotation(tmp_path, tiny_model):
    rng = random.Random(3)
    times = [0.0]
    while times[-1] < 20:
        times.append(round(times[-1] + rng.uniform(0.03, 0.9), 3))
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "vfr.mp4", times, (5.3, 9.1))
    # Stored with the square top-right; shown turned 90° counter-clockwise, it is top-left,
    # where the double looks: it only finds the square if frames arrive upright.
    write_video(src / "rotated.mp4", constant_rate(6, 10), None, rotation=90,
                draw=lambda t: top_right_square(320, 240, 2.0 <= t < 4.0))  # fmt: skip
    out = tmp_path / "out"
    run_job([f"{src}/*"], out, "--query=red square", "--fps=2", "--window-seconds=30",
            handler=grounding_handler(tiny_model))  # fmt: skip
    events = {Path(e["source_uri"]).name: e for e in read_table(out, "video_events")}
    windows = {Path(w["source_uri"]).name: w for w in read_table(out, "video_windows")}
    vfr = windows["vfr.mp4"]
    # the one window got, for each instant, the first frame presented at or after it
    assert vfr["start_s"] == 0 and vfr["end_s"] > times[-1]
    assert vfr["frame_times_s"] == pytest.approx(first_frames(times, 0, vfr["end_s"], 2))
    assert vfr["frame_times_s"][0] == 0.0 and vfr["frame_times_s"][-1] == times[-1]
    # the event is what the double reads from those true times; with irregular frames its
    # answer is only as fine as the frames around the instants (up to 0.9 s apart here)
    expected = expected_event([vfr], times, lambda t: 5.3 <= t < 9.1, 2)
    event = events["vfr.mp4"]
    assert (event["start_s"], event["end_s"]) == pytest.approx(expected, abs=0.011)
    first_red = next(t for t in times if t >= 5.3)
    last_red = max(t for t in times if t < 9.1)
    assert abs(event["start_s"] - first_red) <= 0.9 and abs(event["end_s"] - last_red) <= 0.9
    # the rotated file's frames reached the model upright (portrait) with the square found
    rotated = windows["rotated.mp4"]
    assert rotated["frame_times_s"] == pytest.approx([i / 2 for i in range(12)])
    expected = expected_event([rotated], constant_rate(6, 10), lambda t: 2.0 <= t < 4.0, 2)
    event = events["rotated.mp4"]
    assert (event["start_s"], event["end_s"]) == pytest.approx(expected, abs=0.011)
    assert abs(event["start_s"] - 2.0) <= 0.1 and abs(event["end_s"] - 4.0) <= 0.35


def test_rotated_frames_are_upright(tmp_path):
    path = write_video(tmp_path / "r.mp4", constant_rate(2, 10), (0.0, 2.0), rotation=90)
    container = open_container(str(path))
    info = probe(container)
    assert (info.width, info.height, info.rotation) == (240, 320, 90)
    frames, _ = sample_window(container, info, 0, 2, SamplingConfig())
    image = Image.open(io.BytesIO(frames[0].image))
    assert image.size == (240, 320)
    # stored top-left square, turned 90° counter-clockwise for display: bottom-left
    w, h = image.size
    assert image.getpixel((w // 4, h * 3 // 4))[0] > 170
    assert image.getpixel((w * 3 // 4, h // 4))[0] < 170


def test_tiny_model_on_a_short_video_gives_parse_failures(tiny_model, tmp_path):
    """The real transformers path: garbage answers end as `parse` failures that keep the
    raw text; the windows are still recorded."""
    video = write_video(tmp_path / "short.mp4", constant_rate(5, 10), (1.0, 2.0))
    out = tmp_path / "out"
    run_job([str(video)], out, "--model=tiny-random", "--max-new-tokens=4", "--fps=2",
            "--max-pixels-per-frame=16384")  # fmt: skip
    [window] = read_table(out, "video_windows")
    assert window["num_frames"] == 10 and window["output_tokens"] == 4
    assert window["backend"] == "transformers" and window["model"] == "tiny-random"
    assert window["input_tokens"] > 50
    failures = read_table(out, "failures")
    assert [(f["stage"], f["error_type"], f["unit"]) for f in failures] == [
        ("parse", "UnparseableAnswer", 0)
    ]
    assert "raw answer:" in failures[0]["message"]
    [doc] = read_table(out, "documents")
    assert doc["status"] == "failed"


def test_single_frame_window_reaches_the_model(tiny_model, tmp_path):
    """A clip shorter than one sampling interval has one frame; Qwen3-VL needs whole
    temporal patches of two, so the frame is repeated rather than the window failing."""
    video = write_video(tmp_path / "blip.mp4", [0.0, 0.04], None)
    out = tmp_path / "out"
    run_job([str(video)], out, "--model=tiny-random", "--max-new-tokens=2")
    [window] = read_table(out, "video_windows")
    assert window["num_frames"] == 1 and window["frame_times_s"] == [0.0]
    assert [f["stage"] for f in read_table(out, "failures")] == ["parse"]
